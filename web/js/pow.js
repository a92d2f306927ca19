// Checks the bot's proof of work on a reply, in the browser.
//
// The bot answers "<text> !pow" with the text reversed (by code point) and
// pow = {nonce, hash, bits}, where hash = hex SHA-256 of the UTF-8 bytes of
// the original text (suffix removed) followed by the decimal nonce, with its
// first `bits` bits zero. Reversing the reply again gives the original text.
// Web Crypto does the hashing where the page is a secure context; elsewhere
// (plain http on a LAN address, where crypto.subtle is missing) a small
// SHA-256 written here from FIPS 180-4 does.

const cache = new Map();

/** Resolves to {ok, reason} for a message carrying `pow`. Cached per message. */
export function verifyPow(message)
{
    const key = `${message.id}:${message.pow?.hash}:${message.pow?.nonce}`;
    if (!cache.has(key))
        cache.set(key, check(message));
    return cache.get(key);
}

async function check(message)
{
    const pow = message.pow;
    if (!pow || typeof pow.hash !== 'string')
        return {ok: false, reason: 'no proof attached'};
    const original = [...(message.text || '')].reverse().join('');
    const input = new TextEncoder().encode(original + String(pow.nonce));
    const digest = await sha256(input);
    const hex = [...digest].map(b => b.toString(16).padStart(2, '0')).join('');
    if (hex !== pow.hash.toLowerCase())
        return {ok: false, reason: 'hash does not match', computed: hex};
    const bits = Number(pow.bits) || 0;
    if (leadingZeroBits(digest) < bits)
        return {ok: false, reason: `fewer than ${bits} leading zero bits`, computed: hex};
    return {ok: true, computed: hex};
}

function leadingZeroBits(bytes)
{
    let n = 0;
    for (const b of bytes) {
        if (b === 0) {
            n += 8;
            continue;
        }
        return n + Math.clz32(b) - 24;
    }
    return n;
}

async function sha256(bytes)
{
    if (globalThis.crypto && crypto.subtle)
        return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return sha256js(bytes);
}

const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** SHA-256 of a Uint8Array, for pages without crypto.subtle. */
export function sha256js(bytes)
{
    const bitLen = bytes.length * 8;
    const padded = new Uint8Array(((bytes.length + 9 + 63) >> 6) << 6);
    padded.set(bytes);
    padded[bytes.length] = 0x80;
    const dv = new DataView(padded.buffer);
    dv.setUint32(padded.length - 8, Math.floor(bitLen / 2 ** 32));
    dv.setUint32(padded.length - 4, bitLen >>> 0);
    const H = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                               0x5be0cd19]);
    const W = new Uint32Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let off = 0; off < padded.length; off += 64) {
        for (let i = 0; i < 16; i++)
            W[i] = dv.getUint32(off + i * 4);
        for (let i = 16; i < 64; i++) {
            const s0 = rotr(W[i - 15], 7) ^ rotr(W[i - 15], 18) ^ (W[i - 15] >>> 3);
            const s1 = rotr(W[i - 2], 17) ^ rotr(W[i - 2], 19) ^ (W[i - 2] >>> 10);
            W[i] = W[i - 16] + s0 + W[i - 7] + s1;
        }
        let [a, b, c, d, e, f, g, hh] = H;
        for (let i = 0; i < 64; i++) {
            const S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
            const ch = (e & f) ^ (~e & g);
            const t1 = (hh + S1 + ch + K[i] + W[i]) >>> 0;
            const S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
            const maj = (a & b) ^ (a & c) ^ (b & c);
            const t2 = (S0 + maj) >>> 0;
            hh = g;
            g = f;
            f = e;
            e = (d + t1) >>> 0;
            d = c;
            c = b;
            b = a;
            a = (t1 + t2) >>> 0;
        }
        H[0] += a;
        H[1] += b;
        H[2] += c;
        H[3] += d;
        H[4] += e;
        H[5] += f;
        H[6] += g;
        H[7] += hh;
    }
    const out = new Uint8Array(32);
    const ov = new DataView(out.buffer);
    for (let i = 0; i < 8; i++)
        ov.setUint32(i * 4, H[i]);
    return out;
}
