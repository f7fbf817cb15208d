// A minimal ustar writer and reader for the tests (the SDK itself moves tar
// streams as bytes and leaves packing to the caller).
const enc = new TextEncoder();

function header(name, size, type, mode, link = "") {
  const h = new Uint8Array(512);
  const put = (s, off, len) => h.set(enc.encode(s).slice(0, len), off);
  const oct = (n, len) => n.toString(8).padStart(len - 1, "0") + "\0";
  put(name, 0, 100);
  put(oct(mode, 8), 100, 8);
  put(oct(0, 8), 108, 8);
  put(oct(0, 8), 116, 8);
  put(oct(size, 12), 124, 12);
  put(oct(Math.floor(Date.now() / 1000), 12), 136, 12);
  put("        ", 148, 8);
  put(type, 156, 1);
  put(link, 157, 100);
  put("ustar\0", 257, 6);
  put("00", 263, 2);
  const sum = h.reduce((a, b) => a + b, 0);
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
  return h;
}

/** entries: [{name, data?: string|Uint8Array, type?: "0"|"5"|"2", mode?, link?}] */
export function pack(entries) {
  const parts = [];
  for (const e of entries) {
    const data = typeof e.data === "string" ? enc.encode(e.data) : (e.data ?? new Uint8Array());
    parts.push(header(e.name, data.length, e.type ?? "0", e.mode ?? 0o644, e.link ?? ""));
    parts.push(data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  parts.push(new Uint8Array(1024));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Reads a tar stream into [{name, type, size, data, link}]; handles PAX headers by skipping them. */
export function unpack(buf) {
  const dec = new TextDecoder();
  const str = (off, len) => dec.decode(buf.subarray(off, off + len)).replace(/\0.*$/s, "");
  const out = [];
  let off = 0;
  let paxName;
  while (off + 512 <= buf.length && buf[off] !== 0) {
    const name = str(off, 100), prefix = str(off + 345, 155);
    const size = parseInt(str(off + 124, 12).trim() || "0", 8);
    const type = str(off + 156, 1) || "0";
    const data = buf.subarray(off + 512, off + 512 + size);
    if (type === "x") {
      const m = /\d+ path=([^\n]*)\n/.exec(dec.decode(data));
      paxName = m?.[1];
    } else {
      out.push({ name: paxName ?? (prefix ? prefix + "/" + name : name), type, size, data, link: str(off + 157, 100) });
      paxName = undefined;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}
