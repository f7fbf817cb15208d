import asyncio
import io
import os
import tarfile
import time

import httpx
import pytest

import warren as wn
from warren import AsyncWarren, Warren


def test_hello(warren, runtime):
    # The README's example, as written there.
    with warren.create_sandbox(image="busybox", runtime=runtime) as sb:
        res = sb.exec("echo hello from $(hostname)")
        assert res.exit_code == 0 and res.stdout.startswith("hello from ")
        sid = sb.id
    assert warren.get_sandbox(sid).state == "deleted"


def test_exec(sandbox):
    r = sandbox.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = sandbox.exec(["sh", "-c", 'echo "$1"', "sh", "an argv"])
    assert r.stdout == "an argv\n"
    r = sandbox.exec("cat", stdin="from stdin\n")
    assert r.stdout == "from stdin\n"
    r = sandbox.exec("echo $GREETING; pwd", env={"GREETING": "hi"}, cwd="/tmp")
    assert r.stdout == "hi\n/tmp\n"
    t0 = time.monotonic()
    r = sandbox.exec("sleep 30", timeout=1)
    assert r.timed_out and r.exit_code != 0 and time.monotonic() - t0 < 15


def test_streaming_order(sandbox):
    events = []
    r = sandbox.exec("for i in 1 2 3; do echo o$i; sleep 0.1; echo e$i >&2; sleep 0.1; done; exit 4",
                     on_stdout=lambda d: events.append(("out", d, time.monotonic())),
                     on_stderr=lambda d: events.append(("err", d, time.monotonic())))
    assert r.exit_code == 4
    assert [(k, d) for k, d, _ in events] == [("out", "o1\n"), ("err", "e1\n"), ("out", "o2\n"), ("err", "e2\n"),
                                              ("out", "o3\n"), ("err", "e3\n")]
    assert events[-1][2] - events[0][2] > 0.3, "output arrived all at once: not streamed"
    frames = list(sandbox.exec_stream("echo a; echo b"))
    assert "".join(f.data for f in frames if f.type == "stdout") == "a\nb\n"
    assert frames[-1].type == "exit" and frames[-1].exit_code == 0


def test_interactive_stdin(sandbox):
    with sandbox.exec_interactive("while read l; do echo got:$l; done") as s:
        for i in range(3):
            s.send_stdin(f"line{i}\n")
            f = s.recv(timeout=30)
            assert (f.type, f.data) == ("stdout", f"got:line{i}\n")
        s.close_stdin()
        while True:
            f = s.recv(timeout=30)
            if f.type == "exit":
                assert f.exit_code == 0
                break


def test_files(sandbox, tmp_path):
    blob = os.urandom(10 << 20)
    fi = sandbox.write_file("/data/blob.bin", blob, mode="0600")
    assert fi.size == len(blob) and fi.mode == "0600"
    assert sandbox.read_file("/data/blob.bin") == blob
    assert sandbox.exec("md5sum /data/blob.bin").stdout.split()[0] == __import__("hashlib").md5(blob).hexdigest()
    sandbox.write_file("/data/t.txt", "text\n")
    assert sandbox.stat_file("/data/t.txt").type == "file"
    assert [e.name for e in sandbox.list_files("/data")] == ["blob.bin", "t.txt"]
    assert sandbox.mkdir("/data/sub/deeper").type == "dir"
    with pytest.raises(wn.ConflictError):
        sandbox.remove_file("/data/sub")
    sandbox.remove_file("/data/sub", recursive=True)
    with pytest.raises(wn.NotFoundError):
        sandbox.stat_file("/data/sub")

    # Directories as tar, both ways.
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "deep.txt").write_text("deep\n")
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "run.sh").chmod(0o755)
    (src / "link").symlink_to("a/b/deep.txt")
    sandbox.upload_dir(str(src), "/up")
    assert sandbox.exec("/up/run.sh; cat /up/link").stdout == "ran\ndeep\n"
    dst = tmp_path / "dst"
    sandbox.download_dir("/up", str(dst))
    assert (dst / "a" / "b" / "deep.txt").read_text() == "deep\n"
    assert os.readlink(dst / "link") == "a/b/deep.txt"
    assert os.access(dst / "run.sh", os.X_OK)


def test_download_refuses_escapes(sandbox, tmp_path):
    # Root in the sandbox makes a link that points out of the tree.
    sandbox.exec("mkdir -p /evil && ln -s /etc /evil/etc && echo x > /evil/ok")
    with pytest.raises(ValueError, match="leaves the directory"):
        sandbox.download_dir("/evil", str(tmp_path / "dl"))
    # And a tar uploaded with a climbing name is refused whole.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("../../escaped")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(wn.BadRequestError):
        sandbox.write_archive("/in", buf.getvalue())
    assert sandbox.exec("ls /escaped").exit_code != 0


def test_pty(sandbox):
    with sandbox.pty(cols=90, rows=20) as term:
        screen = b""

        def expect(want):
            nonlocal screen
            deadline = time.monotonic() + 30
            while want not in screen:
                assert time.monotonic() < deadline, f"waiting for {want!r}; screen: {screen!r}"
                screen += term.read(timeout=30)

        term.write("tty; stty size; echo echo-$((40+2))\n")
        expect(b"/dev/pts/")
        expect(b"20 90")
        expect(b"echo-42")
        term.resize(120, 40)
        term.write("stty size\n")
        expect(b"40 120")


def test_background_commands(sandbox):
    sandbox.start_command("ticker", "for i in 1 2 3; do echo tick$i; sleep 0.1; done")
    out = b"".join(sandbox.command_logs("ticker", follow=True))
    assert out == b"tick1\ntick2\ntick3\n"
    [c] = [c for c in sandbox.commands() if c.name == "ticker"]
    assert c.state == "exited" and c.exit_code == 0


def test_preview_token(sandbox):
    sandbox.write_file("/srv/index.html", "hello preview\n")
    sandbox.start_command("web", "exec busybox httpd -f -p 8000 -h /srv")
    sandbox.expose_port(8000)
    tok = sandbox.preview_token(8000, ttl=600)
    assert tok.token and tok.token_id and tok.expires_at is not None
    deadline = time.monotonic() + 30
    while True:
        status, body = visit(tok.url)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (status, body) == (200, "hello preview\n")
    sandbox.revoke_preview_tokens(8000)
    # A revoked link finds nothing, as an unknown one would.
    assert visit(tok.url)[0] == 404


def visit(link):
    """Opens a preview link as a browser would (the token becomes a cookie
    on a redirect), reaching the preview host on this machine: names under
    .localhost need not resolve here."""
    u = httpx.URL(link)
    local = u.copy_with(host="127.0.0.1")
    host = {"Host": u.netloc.decode()}
    r = httpx.get(local, headers=host)
    if r.status_code != 302:
        return r.status_code, r.text
    cookie = r.headers["set-cookie"].split(";")[0]
    r = httpx.get(local.join(r.headers["location"]), headers={**host, "Cookie": cookie})
    return r.status_code, r.text


def test_pause_resume_fork(warren, runtime):
    with warren.create_sandbox(image="busybox", runtime=runtime) as sb:
        sb.exec("echo kept > /tmp/state")
        if runtime == "runc":
            with pytest.raises(wn.ConflictError):
                sb.pause()
            return
        assert sb.pause().state == "paused"
        assert sb.resume().state == "running"
        assert sb.exec("cat /tmp/state").stdout == "kept\n"
        # An exec wakes a paused sandbox.
        sb.pause()
        assert sb.exec("cat /tmp/state").stdout == "kept\n"
        assert sb.refresh().state == "running"
        [child] = sb.fork()
        with child:
            assert child.exec("cat /tmp/state").stdout == "kept\n"
            assert child.id != sb.id


def test_errors(warren):
    with pytest.raises(wn.NotFoundError) as e:
        warren.get_sandbox("sbx_aaaaaaaaaaaaaaaaaaaa")
    assert e.value.status == 404 and e.value.code == "not_found"
    with pytest.raises(wn.BadRequestError) as e:
        warren.create_sandbox(image="busybox", memory_mb=1)
    assert e.value.status == 400 and e.value.field == "resources.memory_mb"
    with pytest.raises(wn.BadRequestError) as e:
        warren.list_sandboxes(state="sleeping")
    assert e.value.field == "state"
    with Warren(api_key="wrn_" + "a" * 52) as bad:
        with pytest.raises(wn.AuthenticationError) as e:
            bad.info()
        assert e.value.status == 401
    with pytest.raises(wn.NotFoundError):
        warren.get_sandbox("sbx_aaaaaaaaaaaaaaaaaaaa").pty()


def test_list_and_info(warren, sandbox):
    info = warren.info()
    assert sandbox.info.runtime in info.runtimes
    mine = warren.list_sandboxes(state=["running"], metadata={"suite": "sdk-python"})
    assert sandbox.id in [s.id for s in mine]
    assert any(i.name == "busybox" and i.state == "ready" for i in warren.images())


def test_async(runtime):
    async def main():
        async with AsyncWarren() as w:
            async with await w.create_sandbox(image="busybox", runtime=runtime) as sb:
                r = await sb.exec("echo async; exit 2")
                assert (r.exit_code, r.stdout) == (2, "async\n")
                seen = [f.data async for f in sb.exec_stream("echo x; echo y") if f.type == "stdout"]
                assert "".join(seen) == "x\ny\n"
                await sb.write_file("/a.bin", b"\x00\xff" * 1000)
                assert await sb.read_file("/a.bin") == b"\x00\xff" * 1000
                async with await sb.pty(80, 24) as term:
                    await term.write("echo pty-$((1+1))\n")
                    screen = b""
                    while b"pty-2" not in screen:
                        screen += await asyncio.wait_for(term.read(), 30)
                sid = sb.id
            assert (await w.get_sandbox(sid)).state == "deleted"
            with pytest.raises(wn.NotFoundError):
                await w.get_sandbox("sbx_aaaaaaaaaaaaaaaaaaaa")
    asyncio.run(main())


def test_images(warren, runtime, tmp_path):
    # A snapshot of a sandbox set up by hand, then a sandbox of it.
    with warren.create_sandbox(image="busybox", runtime=runtime, env={"FROM_SNAPSHOT": "1"}) as sb:
        sb.exec("echo set-up > /ready")
        img = sb.snapshot(f"py-snap-{runtime}")
        assert img.kind == "snapshot" and img.state == "ready"
    with warren.create_sandbox(image=f"py-snap-{runtime}", runtime=runtime) as sb:
        assert sb.exec("cat /ready; echo $FROM_SNAPSHOT").stdout == "set-up\n1\n"
    # A Dockerfile build; its USER is every exec's default, a request's own user wins.
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY hello.txt /hello.txt\nRUN echo built > /b\nUSER nobody\n")
    (tmp_path / "hello.txt").write_text("hello\n")
    img = warren.build_dockerfile(f"py-built-{runtime}", str(tmp_path))
    assert img.kind == "dockerfile" and img.config.user == "nobody"
    events = []
    again = warren.build_dockerfile(f"py-built-{runtime}", str(tmp_path), progress=events.append)
    assert again.kind == "dockerfile" and [e.message for e in events].count("CACHED") == 2, events
    with warren.create_sandbox(image=img.name, runtime=runtime) as sb:
        assert sb.exec("cat /hello.txt /b; id -u").stdout == "hello\nbuilt\n65534\n"
        assert sb.exec("id -u", user="root").stdout == "0\n"
    with pytest.raises(wn.BadRequestError) as e:
        (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN exit 7\n")
        warren.build_dockerfile("py-bad", str(tmp_path))
    assert e.value.field == "dockerfile" and "line 2" in e.value.message
    for name in (f"py-snap-{runtime}", f"py-built-{runtime}"):
        warren.delete_image(name)
    with pytest.raises(wn.NotFoundError):
        warren.delete_image(f"py-snap-{runtime}")
    assert "removed_caches" in warren.prune_images()
