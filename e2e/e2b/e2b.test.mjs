// E2B's own JavaScript SDK against warren, unchanged: the only setup is
// the environment (E2B_API_URL and E2B_SANDBOX_URL pointing at warren,
// E2B_API_KEY a warren API key). Run by e2e's TestE2BSDK.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { Sandbox, CommandExitError, AuthenticationError, NotFoundError, FilesystemEventType } from 'e2b'

const runtime = process.env.WARREN_TEST_RUNTIME ?? 'default'
const tag = `e2b-test-${runtime}-${process.pid}`

// A GET to a sandbox's port the way a browser reaches getHost(port): the
// host name carries port and sandbox, the address is warren's. (Wildcard
// DNS for the domain would make it a plain fetch.)
function getViaHost(host, path = '/') {
  const api = new URL(process.env.E2B_SANDBOX_URL)
  return new Promise((resolve, reject) => {
    const req = http.request({ host: api.hostname, port: api.port, path, headers: { Host: host } }, (res) => {
      let body = ''
      res.on('data', (c) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

async function eventually(what, check, ms = 10000) {
  const end = Date.now() + ms
  let last
  while (Date.now() < end) {
    try {
      const v = await check()
      if (v) return v
    } catch (e) { last = e }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${what} did not happen in ${ms} ms: ${last ?? ''}`)
}

test(`E2B SDK on warren (${runtime})`, async (t) => {
  const sbx = await Sandbox.create({ metadata: { suite: tag, runtime }, envs: { GREETING: 'hi from env' } })
  t.after(async () => { await Sandbox.kill(sbx.sandboxId).catch(() => {}) })
  assert.match(sbx.sandboxId, /^[a-z0-9]+$/)

  await t.test('commands.run', async () => {
    const r = await sbx.commands.run('echo hello; echo "$GREETING"')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'hello\nhi from env\n')
    const env = await sbx.commands.run('echo $FOO; pwd', { envs: { FOO: 'bar' }, cwd: '/tmp' })
    assert.equal(env.stdout, 'bar\n/tmp\n')
  })

  await t.test('a failing command raises CommandExitError', async () => {
    await assert.rejects(sbx.commands.run('echo oops >&2; exit 3'), (err) => {
      assert.ok(err instanceof CommandExitError, `got ${err}`)
      assert.equal(err.exitCode, 3)
      assert.equal(err.stderr, 'oops\n')
      return true
    })
  })

  await t.test('background command: onStdout, sendStdin, list, kill', async () => {
    let seen = ''
    const h = await sbx.commands.run('while read line; do echo "got $line"; done', {
      background: true, stdin: true, onStdout: (d) => { seen += d },
    })
    assert.ok(h.pid > 0)
    await sbx.commands.sendStdin(h.pid, 'one\n')
    await eventually('output of the first line', () => seen.includes('got one'))
    const listed = await sbx.commands.list()
    assert.ok(listed.some((p) => p.pid === h.pid && p.cmd === '/bin/bash'), JSON.stringify(listed))
    assert.equal(await sbx.commands.kill(h.pid), true)
    await assert.rejects(h.wait(), (err) => err instanceof CommandExitError && err.exitCode !== 0)
    assert.equal(await sbx.commands.kill(h.pid), false)
  })

  await t.test('closeStdin ends input', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'piped')
    await sbx.commands.closeStdin(h.pid)
    const r = await h.wait()
    assert.equal(r.stdout, 'piped')
  })

  await t.test('connect to a running command', async () => {
    const h = await sbx.commands.run('sleep 1; echo late', { background: true })
    await h.disconnect()
    const again = await sbx.commands.connect(h.pid)
    const r = await again.wait()
    assert.equal(r.stdout, 'late\n')
  })

  await t.test('a command past its timeoutMs is stopped', async () => {
    await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1000 }))
    await eventually('the command to be stopped', async () => {
      const left = await sbx.commands.list()
      return !left.some((p) => p.args?.includes('sleep 30'))
    }, 5000)
  })

  await t.test('pty', async () => {
    let out = ''
    const term = await sbx.pty.create({ cols: 100, rows: 30, onData: (d) => { out += new TextDecoder().decode(d) } })
    await sbx.pty.resize(term.pid, { cols: 120, rows: 40 })
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size; exit\n'))
    await term.wait().catch(() => {})
    assert.match(out, /40 120/)
  })

  await t.test('files', async () => {
    const info = await sbx.files.write('/tmp/dir/hello.txt', 'hello file')
    assert.equal(info.path, '/tmp/dir/hello.txt')
    assert.equal(await sbx.files.read('/tmp/dir/hello.txt'), 'hello file')
    const bytes = new Uint8Array(256).map((_, i) => i)
    await sbx.files.write('/tmp/dir/bin.dat', bytes.buffer)
    assert.deepEqual(await sbx.files.read('/tmp/dir/bin.dat', { format: 'bytes' }), bytes)
    // Relative paths are the user's home.
    await sbx.files.write('rel.txt', 'home')
    assert.equal((await sbx.commands.run('cat ~/rel.txt')).stdout, 'home')
    // Compressed on the way.
    await sbx.files.write('/tmp/dir/gz.txt', 'zipped', { gzip: true })
    assert.equal(await sbx.files.read('/tmp/dir/gz.txt'), 'zipped')
    await sbx.files.remove('/tmp/dir/gz.txt')
    // Several at once.
    await sbx.files.write([{ path: '/tmp/multi/a.txt', data: 'A' }, { path: '/tmp/multi/b.txt', data: 'B' }])
    assert.equal(await sbx.files.read('/tmp/multi/b.txt'), 'B')

    assert.equal(await sbx.files.exists('/tmp/dir/hello.txt'), true)
    assert.equal(await sbx.files.exists('/tmp/dir/nope'), false)
    assert.equal(await sbx.files.makeDir('/tmp/dir/sub'), true)
    assert.equal(await sbx.files.makeDir('/tmp/dir/sub'), false)
    const names = (await sbx.files.list('/tmp/dir')).map((e) => `${e.name}:${e.type}`).sort()
    assert.deepEqual(names, ['bin.dat:file', 'hello.txt:file', 'sub:dir'])
    const deep = await sbx.files.list('/tmp', { depth: 2 })
    assert.ok(deep.some((e) => e.path === '/tmp/dir/sub'), JSON.stringify(deep.map((e) => e.path)))
    const moved = await sbx.files.rename('/tmp/dir/hello.txt', '/tmp/dir/sub/renamed.txt')
    assert.equal(moved.path, '/tmp/dir/sub/renamed.txt')
    assert.equal(await sbx.files.exists('/tmp/dir/hello.txt'), false)
    const st = await sbx.files.getInfo('/tmp/dir/sub/renamed.txt')
    assert.equal(st.size, 10)
    assert.equal(st.type, 'file')
    await sbx.files.remove('/tmp/dir')
    assert.equal(await sbx.files.exists('/tmp/dir'), false)
    await assert.rejects(sbx.files.read('/tmp/dir/nope'), (err) => err instanceof NotFoundError)
  })

  await t.test('watchDir', async () => {
    await sbx.files.makeDir('/tmp/watched')
    const events = []
    const handle = await sbx.files.watchDir('/tmp/watched', (e) => { events.push(e) }, { recursive: true })
    try {
      await sbx.files.write('/tmp/watched/new.txt', 'x')
      await eventually('the write to be seen', () => events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.CREATE))
      await sbx.files.makeDir('/tmp/watched/sub')
      await eventually('the new directory to be seen', () => events.some((e) => e.name === 'sub'))
      // Followed once made: its own changes arrive too.
      await sbx.commands.run('echo deep > /tmp/watched/sub/deep.txt')
      await eventually('the change below to be seen', () => events.some((e) => e.name === 'sub/deep.txt'))
      await sbx.files.remove('/tmp/watched/new.txt')
      await eventually('the removal to be seen', () => events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.REMOVE))
      // The write's temporary file is not news.
      assert.ok(!events.some((e) => e.name.includes('.warren-')), JSON.stringify(events))
    } finally {
      await handle.stop()
    }
  })

  await t.test('getHost serves a port of the sandbox', async () => {
    await sbx.files.write('/srv/index.html', 'served from the sandbox')
    await sbx.commands.run('cd /srv && python3 -m http.server 8000', { background: true })
    const host = sbx.getHost(8000)
    assert.match(host, new RegExp(`^8000-${sbx.sandboxId}\\.`))
    const res = await eventually('the server to answer', async () => {
      const r = await getViaHost(host, '/index.html')
      return r.status === 200 ? r : null
    })
    assert.equal(res.body, 'served from the sandbox')
  })

  await t.test('setTimeout and getInfo', async () => {
    await sbx.setTimeout(120_000)
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.state, 'running')
    assert.equal(info.metadata.suite, tag)
    const left = info.endAt.getTime() - Date.now()
    assert.ok(left > 100_000 && left <= 121_000, `endAt is ${left} ms away`)
    assert.equal(await sbx.isRunning(), true)
  })

  await t.test('Sandbox.list filters by metadata', async () => {
    const other = await Sandbox.create({ metadata: { suite: `${tag}-other` } })
    try {
      const page = await Sandbox.list({ query: { metadata: { suite: tag } } }).nextItems()
      assert.deepEqual(page.map((s) => s.sandboxId), [sbx.sandboxId])
      const both = await Sandbox.list({ query: { metadata: { runtime } } }).nextItems()
      assert.ok(both.some((s) => s.sandboxId === sbx.sandboxId))
    } finally {
      await other.kill()
    }
  })

  await t.test('createSnapshot makes a template for Sandbox.create', async () => {
    await sbx.files.write('/opt/from-snapshot.txt', 'snapshotted')
    const snap = await sbx.createSnapshot()
    assert.ok(snap.snapshotId)
    const child = await Sandbox.create(snap.snapshotId)
    try {
      assert.equal(await child.files.read('/opt/from-snapshot.txt'), 'snapshotted')
    } finally {
      await child.kill()
    }
  })

  // runc sandboxes cannot be checkpointed: pausing (and forking) one is
  // refused.
  if (runtime !== 'runc') await t.test('fork copies a running sandbox', async () => {
    await sbx.files.write('/tmp/before-fork.txt', 'shared past')
    const [copy] = await sbx.fork()
    assert.ok(!(copy instanceof Error), `${copy}`)
    try {
      assert.notEqual(copy.sandboxId, sbx.sandboxId)
      assert.equal(await copy.files.read('/tmp/before-fork.txt'), 'shared past')
      await copy.files.write('/tmp/before-fork.txt', 'diverged')
      assert.equal(await sbx.files.read('/tmp/before-fork.txt'), 'shared past')
    } finally {
      await copy.kill()
    }
  })

  // runc sandboxes cannot be checkpointed: pausing one is refused.
  if (runtime !== 'runc') await t.test('pause, then connect with processes and files kept', async () => {
    const bg = await sbx.commands.run('sleep 600', { background: true })
    await bg.disconnect()
    await sbx.files.write('/tmp/kept.txt', 'kept')
    assert.equal(await sbx.pause(), true)
    assert.equal((await sbx.getInfo()).state, 'paused')
    assert.equal(await Sandbox.pause(sbx.sandboxId), false) // already paused
    const back = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await back.getInfo()).state, 'running')
    assert.equal(await back.files.read('/tmp/kept.txt'), 'kept')
    const procs = await back.commands.list()
    assert.ok(procs.some((p) => p.pid === bg.pid), JSON.stringify(procs))
    assert.equal((await back.commands.run('echo after resume')).stdout, 'after resume\n')
  })

  if (runtime === 'runc') {
    await t.test('runc cannot pause, and says so', async () => {
      await assert.rejects(sbx.pause(), /cannot pause/)
      assert.equal((await sbx.getInfo()).state, 'running')
    })
  }

  await t.test('kill, and a second kill answers false', async () => {
    assert.equal(await Sandbox.kill(sbx.sandboxId), true)
    assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  })
})

test('a wrong API key is the SDK\'s AuthenticationError', async () => {
  await assert.rejects(Sandbox.create({ apiKey: 'e2b_0000000000000000000000000000000000000000' }), (err) => {
    assert.ok(err instanceof AuthenticationError, `got ${err}`)
    return true
  })
})
