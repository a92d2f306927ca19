/*
 * Logging: one line per event on stderr, `ts level msg key=value...`.
 * Thread-safe (each line is written with a single write(2)).
 */
#ifndef NT_LOG_H
#define NT_LOG_H

enum { NT_LOG_DEBUG, NT_LOG_INFO, NT_LOG_WARN, NT_LOG_ERROR };

extern int nt_log_level;
/* Parses "debug", "info", "warn", "error"; returns -1 if unknown. */
int nt_log_level_parse(const char *name);
void nt_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define nt_debug(...) (nt_log_level <= NT_LOG_DEBUG ? nt_log(NT_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define nt_info(...) (nt_log_level <= NT_LOG_INFO ? nt_log(NT_LOG_INFO, __VA_ARGS__) : (void)0)
#define nt_warn(...) nt_log(NT_LOG_WARN, __VA_ARGS__)
#define nt_error(...) nt_log(NT_LOG_ERROR, __VA_ARGS__)

#endif
