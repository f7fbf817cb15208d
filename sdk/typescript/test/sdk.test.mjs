// The SDK against a real warren: WARREN_URL and WARREN_API_KEY name it (the
// e2e suite starts one and runs these), WARREN_TEST_RUNTIMES the runtimes.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { describe, it, before } from "node:test";

import {
  AuthenticationError, BadRequestError, ConflictError, NotFoundError, Warren, WarrenError,
} from "../dist/esm/index.js";
import { pack, unpack } from "./tar.mjs";

const runtimes = (process.env.WARREN_TEST_RUNTIMES ?? "gvisor,runc").split(",");
const warren = new Warren();
const dec = new TextDecoder();

before(() => {
  assert.ok(process.env.WARREN_URL, "WARREN_URL is not set: these tests need a running warren (make test runs them)");
});

async function withBox(runtime, fn) {
  return warren.withSandbox({ image: "busybox", runtime, metadata: { suite: "sdk-typescript" } }, fn);
}

async function until(what, fn, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

for (const runtime of runtimes) {
  describe(runtime, () => {
    it("says hello, as the README does, and deletes the sandbox after", async () => {
      let id;
      await warren.withSandbox({ image: "busybox", runtime }, async (sb) => {
        const res = await sb.exec("echo hello from $(hostname)");
        assert.equal(res.exit_code, 0);
        assert.match(res.stdout, /^hello from /);
        id = sb.id;
      });
      assert.equal((await warren.getSandbox(id)).state, "deleted");
    });

    it("runs commands: exit codes, stderr, argv, stdin, env, cwd, timeout", () => withBox(runtime, async (sb) => {
      let r = await sb.exec("echo out; echo err >&2; exit 3");
      assert.deepEqual([r.exit_code, r.stdout, r.stderr], [3, "out\n", "err\n"]);
      r = await sb.exec(["sh", "-c", 'echo "$1"', "sh", "an argv"]);
      assert.equal(r.stdout, "an argv\n");
      r = await sb.exec("cat", { stdin: "from stdin\n" });
      assert.equal(r.stdout, "from stdin\n");
      r = await sb.exec("echo $GREETING; pwd", { env: { GREETING: "hi" }, cwd: "/tmp" });
      assert.equal(r.stdout, "hi\n/tmp\n");
      const t0 = Date.now();
      r = await sb.exec("sleep 30", { timeoutSeconds: 1 });
      assert.ok(r.timed_out && r.exit_code !== 0 && Date.now() - t0 < 15000, JSON.stringify(r));
    }));

    it("streams output in order, by callbacks and as an async iterator", () => withBox(runtime, async (sb) => {
      const events = [];
      const r = await sb.exec("for i in 1 2 3; do echo o$i; sleep 0.1; echo e$i >&2; sleep 0.1; done; exit 4", {
        onStdout: (d) => events.push(["out", d, Date.now()]),
        onStderr: (d) => events.push(["err", d, Date.now()]),
      });
      assert.equal(r.exit_code, 4);
      assert.deepEqual(events.map(([k, d]) => k + ":" + d), ["out:o1\n", "err:e1\n", "out:o2\n", "err:e2\n", "out:o3\n", "err:e3\n"]);
      assert.ok(events.at(-1)[2] - events[0][2] > 300, "output arrived all at once: not streamed");
      const frames = [];
      for await (const f of sb.execStream("echo a; echo b")) frames.push(f);
      assert.equal(frames.filter((f) => f.type === "stdout").map((f) => f.data).join(""), "a\nb\n");
      assert.equal(frames.at(-1).type, "exit");
    }));

    it("writes stdin to a running command over a WebSocket", () => withBox(runtime, async (sb) => {
      const s = await sb.execInteractive("while read l; do echo got:$l; done");
      try {
        for (let i = 0; i < 3; i++) {
          s.sendStdin(`line${i}\n`);
          const f = await s.recv();
          assert.deepEqual([f.type, f.data], ["stdout", `got:line${i}\n`]);
        }
        s.closeStdin();
        let exit;
        for await (const f of s) if (f.type === "exit") exit = f;
        assert.equal(exit.exit_code, 0);
      } finally {
        s.close();
      }
    }));

    it("moves files: 10 MB of binary both ways, text, streams, listings", () => withBox(runtime, async (sb) => {
      const blob = new Uint8Array(randomBytes(10 << 20));
      const fi = await sb.writeFile("/data/blob.bin", blob, { mode: "0600" });
      assert.equal(fi.size, blob.length);
      assert.equal(fi.mode, "0600");
      assert.ok(Buffer.from(await sb.readFile("/data/blob.bin")).equals(Buffer.from(blob)));
      const md5 = (await sb.exec("md5sum /data/blob.bin")).stdout.split(" ")[0];
      assert.equal(md5, createHash("md5").update(blob).digest("hex"));
      const chunks = [new TextEncoder().encode("from "), new TextEncoder().encode("a stream\n")];
      await sb.writeFile("/data/t.txt", new ReadableStream({ pull(c) { const x = chunks.shift(); x ? c.enqueue(x) : c.close(); } }));
      assert.equal(await sb.readFileText("/data/t.txt"), "from a stream\n");
      assert.deepEqual((await sb.listFiles("/data")).map((e) => e.name), ["blob.bin", "t.txt"]);
      assert.equal((await sb.mkdir("/data/sub/deeper")).type, "dir");
      await assert.rejects(sb.removeFile("/data/sub"), ConflictError);
      await sb.removeFile("/data/sub", { recursive: true });
      await assert.rejects(sb.statFile("/data/sub"), NotFoundError);
    }));

    it("moves directories as tar, refusing entries that climb out", () => withBox(runtime, async (sb) => {
      await sb.writeArchive("/up", pack([
        { name: "a/", type: "5", mode: 0o755 },
        { name: "a/deep.txt", data: "deep\n" },
        { name: "run.sh", data: "#!/bin/sh\necho ran\n", mode: 0o755 },
        { name: "link", type: "2", link: "a/deep.txt" },
      ]));
      assert.equal((await sb.exec("/up/run.sh; cat /up/link")).stdout, "ran\ndeep\n");
      const entries = unpack(await sb.readArchive("/up"));
      const byName = Object.fromEntries(entries.map((e) => [e.name, e]));
      assert.equal(dec.decode(byName["a/deep.txt"].data), "deep\n");
      assert.equal(byName["link"].link, "a/deep.txt");
      const err = await sb.writeArchive("/in", pack([{ name: "../../escaped", data: "x" }])).catch((e) => e);
      assert.ok(err instanceof BadRequestError, String(err));
      assert.notEqual((await sb.exec("ls /escaped")).exit_code, 0);
    }));

    it("opens a terminal: echo and resize", () => withBox(runtime, async (sb) => {
      const term = await sb.pty({ cols: 90, rows: 20 });
      try {
        let screen = "";
        const expect = async (want) => {
          while (!screen.includes(want)) {
            const b = await term.read();
            assert.ok(b, `the terminal ended waiting for ${want}; screen: ${screen}`);
            screen += dec.decode(b);
          }
        };
        term.write("tty; stty size; echo echo-$((40+2))\n");
        await expect("/dev/pts/");
        await expect("20 90");
        await expect("echo-42");
        term.resize(120, 40);
        term.write("stty size\n");
        await expect("40 120");
        term.write("exit 7\n");
        while (await term.read()) {}
        assert.equal(term.exitCode, 7);
      } finally {
        term.close();
      }
    }));

    it("runs background commands and follows their logs", () => withBox(runtime, async (sb) => {
      await sb.startCommand("ticker", "for i in 1 2 3; do echo tick$i; sleep 0.1; done");
      let out = "";
      for await (const chunk of sb.commandLogs("ticker", { follow: true })) out += dec.decode(chunk);
      assert.equal(out, "tick1\ntick2\ntick3\n");
      const c = (await sb.commands()).find((c) => c.name === "ticker");
      assert.deepEqual([c.state, c.exit_code], ["exited", 0]);
    }));

    it("signs a preview link that a browser can open, and revokes it", () => withBox(runtime, async (sb) => {
      await sb.writeFile("/srv/index.html", "hello preview\n");
      await sb.startCommand("web", "exec busybox httpd -f -p 8000 -h /srv");
      await sb.exposePort(8000);
      const tok = await sb.previewToken(8000, { ttlSeconds: 600 });
      assert.ok(tok.token && tok.token_id && tok.expires_at);
      const [status, body] = await until("the preview", async () => {
        const r = await visit(tok.url);
        return r[0] === 200 ? r : undefined;
      });
      assert.deepEqual([status, body], [200, "hello preview\n"]);
      await sb.revokePreviewTokens(8000);
      assert.equal((await visit(tok.url))[0], 404);
    }));

    it("pauses, resumes and forks (gVisor), or says why not (runc)", () => withBox(runtime, async (sb) => {
      await sb.exec("echo kept > /tmp/state");
      if (runtime === "runc") {
        await assert.rejects(sb.pause(), ConflictError);
        return;
      }
      assert.equal((await sb.pause()).state, "paused");
      assert.equal((await sb.resume()).state, "running");
      assert.equal((await sb.exec("cat /tmp/state")).stdout, "kept\n");
      const [child] = await sb.fork();
      try {
        assert.notEqual(child.id, sb.id);
        assert.equal((await child.exec("cat /tmp/state")).stdout, "kept\n");
      } finally {
        await child.delete();
      }
    }));

    it("snapshots a sandbox and builds from a Dockerfile", async () => {
      await withBox(runtime, async (sb) => {
        await sb.exec("echo set-up > /ready");
        const img = await sb.snapshot(`ts-snap-${runtime}`);
        assert.deepEqual([img.kind, img.state], ["snapshot", "ready"]);
      });
      await warren.withSandbox({ image: `ts-snap-${runtime}`, runtime }, async (sb) => {
        assert.equal((await sb.exec("cat /ready")).stdout, "set-up\n");
      });
      const context = pack([
        { name: "Dockerfile", data: "FROM busybox\nCOPY hello.txt /hello.txt\nRUN echo built > /b\nUSER nobody\n" },
        { name: "hello.txt", data: "hello\n" },
      ]);
      const img = await warren.buildDockerfile(`ts-built-${runtime}`, context);
      assert.deepEqual([img.kind, img.config?.user], ["dockerfile", "nobody"]);
      const events = [];
      await warren.buildDockerfile(`ts-built-${runtime}`, context, { onProgress: (ev) => events.push(ev.message) });
      assert.equal(events.filter((m) => m === "CACHED").length, 2, events.join("\n"));
      await warren.withSandbox({ image: img.name, runtime }, async (sb) => {
        assert.equal((await sb.exec("cat /hello.txt /b; id -u")).stdout, "hello\nbuilt\n65534\n");
        assert.equal((await sb.exec("id -u", { user: "root" })).stdout, "0\n");
      });
      const bad = await warren.buildDockerfile("ts-bad", pack([{ name: "Dockerfile", data: "FROM busybox\nRUN exit 7\n" }])).catch((e) => e);
      assert.ok(bad instanceof BadRequestError && bad.field === "dockerfile" && bad.message.includes("line 2"), String(bad));
      for (const n of [`ts-snap-${runtime}`, `ts-built-${runtime}`]) await warren.deleteImage(n);
      await assert.rejects(warren.deleteImage(`ts-snap-${runtime}`), NotFoundError);
      assert.ok("removed_caches" in (await warren.pruneImages()));
    });

    it("abandons a call when its signal aborts", () => withBox(runtime, async (sb) => {
      const ac = new AbortController();
      const t0 = Date.now();
      setTimeout(() => ac.abort(), 300);
      await assert.rejects(sb.exec("sleep 30", { signal: ac.signal }), (e) => e.name === "AbortError");
      assert.ok(Date.now() - t0 < 10000);
      await assert.rejects(async () => { for await (const _ of sb.execStream("sleep 30", { signal: AbortSignal.timeout(300) })) {} });
    }));
  });
}

describe("errors", () => {
  it("carry the API's status, code and field", async () => {
    let e = await warren.getSandbox("sbx_aaaaaaaaaaaaaaaaaaaa").catch((x) => x);
    assert.ok(e instanceof NotFoundError && e instanceof WarrenError);
    assert.deepEqual([e.status, e.code], [404, "not_found"]);
    e = await warren.createSandbox({ image: "busybox", resources: { memory_mb: 1 } }).catch((x) => x);
    assert.ok(e instanceof BadRequestError);
    assert.deepEqual([e.status, e.field], [400, "resources.memory_mb"]);
    e = await warren.listSandboxes({ state: "sleeping" }).catch((x) => x);
    assert.equal(e.field, "state");
    e = await new Warren({ apiKey: "wrn_" + "a".repeat(52) }).info().catch((x) => x);
    assert.ok(e instanceof AuthenticationError);
    assert.equal(e.status, 401);
  });

  it("are the same on a WebSocket that is refused", async () => {
    const sb = await warren.getSandbox("sbx_aaaaaaaaaaaaaaaaaaaa").catch(() => null);
    assert.equal(sb, null);
    const ghost = new (await import("../dist/esm/index.js")).Sandbox(warren, { id: "sbx_aaaaaaaaaaaaaaaaaaaa" });
    await assert.rejects(ghost.pty(), NotFoundError);
    const denied = new (await import("../dist/esm/index.js")).Sandbox(new Warren({ apiKey: "wrn_" + "b".repeat(52) }), { id: "sbx_aaaaaaaaaaaaaaaaaaaa" });
    await assert.rejects(denied.pty(), AuthenticationError);
  });

  it("a sandbox is deleted when its scope ends, however it ends", async () => {
    let id;
    await assert.rejects(warren.withSandbox({ image: "busybox" }, async (sb) => {
      id = sb.id;
      throw new Error("the agent failed");
    }), /the agent failed/);
    assert.equal((await warren.getSandbox(id)).state, "deleted");
    const sb = await warren.createSandbox({ image: "busybox" });
    await sb[Symbol.asyncDispose ?? Symbol.for("Symbol.asyncDispose")]();
    assert.equal((await warren.getSandbox(sb.id)).state, "deleted");
  });
});

describe("the server", () => {
  it("describes itself and its images", async () => {
    const info = await warren.info();
    assert.ok(info.runtimes.length > 0 && info.version);
    assert.ok((await warren.images()).some((i) => i.name === "busybox" && i.state === "ready"));
  });
});

/** Opens a preview link as a browser would (the token becomes a cookie on
 * a redirect), reaching the preview host on this machine: names under
 * .localhost need not resolve here. */
async function visit(link) {
  const u = new URL(link);
  const get = (path, cookie) => new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port: u.port, path, headers: { Host: u.host, ...(cookie ? { Cookie: cookie } : {}) } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve([res.statusCode, body, res.headers]));
    });
    req.on("error", reject);
  });
  const [status, body, headers] = await get(u.pathname + u.search);
  if (status !== 302) return [status, body];
  const cookie = String(headers["set-cookie"]).split(";")[0];
  const [s2, b2] = await get(new URL(headers.location, u).pathname, cookie);
  return [s2, b2];
}
