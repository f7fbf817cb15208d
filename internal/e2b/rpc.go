package e2b

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/warrenhq/warren/internal/envd/spec/filesystem"
	"github.com/warrenhq/warren/internal/envd/spec/filesystem/filesystemconnect"
	"github.com/warrenhq/warren/internal/envd/spec/process"
	"github.com/warrenhq/warren/internal/envd/spec/process/processconnect"
	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/wire"
)

// rpcError maps a sandbox manager error to a Connect code the SDKs turn
// into their own error classes.
func rpcError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeInternal
	switch statusOf(err) {
	case http.StatusBadRequest:
		code = connect.CodeInvalidArgument
	case http.StatusNotFound:
		code = connect.CodeNotFound
	case http.StatusConflict:
		code = connect.CodeFailedPrecondition
	case http.StatusTooManyRequests, http.StatusInsufficientStorage, http.StatusRequestEntityTooLarge:
		code = connect.CodeResourceExhausted
	case http.StatusBadGateway:
		code = connect.CodeUnavailable
	}
	return connect.NewError(code, err)
}

type processService struct {
	processconnect.UnimplementedProcessHandler
	h *Handler
}

// pidOf resolves a selector (a pid, or a tag given at start).
func (s *processService) pidOf(ctx context.Context, sel *process.ProcessSelector) (int, error) {
	if sel == nil {
		return 0, connect.NewError(connect.CodeInvalidArgument, errors.New("process selector is required"))
	}
	if _, ok := sel.GetSelector().(*process.ProcessSelector_Tag); !ok {
		return int(sel.GetPid()), nil
	}
	procs, err := s.h.sandboxes.Processes(ctx, "", sandboxOf(ctx))
	if err != nil {
		return 0, rpcError(err)
	}
	for _, p := range procs {
		if p.Tag == sel.GetTag() {
			return p.PID, nil
		}
	}
	return 0, connect.NewError(connect.CodeNotFound, fmt.Errorf("no process tagged %q", sel.GetTag()))
}

func (s *processService) List(ctx context.Context, _ *connect.Request[process.ListRequest]) (*connect.Response[process.ListResponse], error) {
	procs, err := s.h.sandboxes.Processes(ctx, "", sandboxOf(ctx))
	if err != nil {
		return nil, rpcError(err)
	}
	out := &process.ListResponse{}
	for _, p := range procs {
		info := &process.ProcessInfo{Pid: uint32(p.PID), Config: &process.ProcessConfig{Envs: p.Env}}
		if len(p.Argv) > 0 {
			info.Config.Cmd, info.Config.Args = p.Argv[0], p.Argv[1:]
		}
		if p.Cwd != "" {
			info.Config.Cwd = &p.Cwd
		}
		if p.Tag != "" {
			info.Tag = &p.Tag
		}
		out.Processes = append(out.Processes, info)
	}
	return connect.NewResponse(out), nil
}

func (s *processService) Start(ctx context.Context, req *connect.Request[process.StartRequest], stream *connect.ServerStream[process.StartResponse]) error {
	m := req.Msg
	cfg := m.GetProcess()
	if cfg == nil || cfg.GetCmd() == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is required"))
	}
	user := userOf(req.Header(), nil)
	ps := &guest.ProcStart{Argv: append([]string{cfg.GetCmd()}, cfg.GetArgs()...), Env: cfg.GetEnvs(), User: user,
		Tag: m.GetTag(), Stdin: m.GetStdin()}
	if cfg.Cwd != nil {
		ps.Cwd = resolve(cfg.GetCwd(), user)
	}
	if m.Pty != nil {
		ps.PTY = &guest.TermSize{Cols: uint16(min(m.GetPty().GetSize().GetCols(), 1<<15)), Rows: uint16(min(m.GetPty().GetSize().GetRows(), 1<<15))}
		ps.Stdin = true
	}
	// The stream is the process's for as long as the caller watches; the
	// caller's deadline (timeoutMs) is the command's, as in envd.
	ps2, err := s.h.sandboxes.StartProcess(context.WithoutCancel(ctx), "", sandboxOf(ctx), ps)
	if err != nil {
		return rpcError(err)
	}
	return relay(ctx, s.h, ps2, req.Header(), true, func(ev *process.ProcessEvent) error {
		return stream.Send(&process.StartResponse{Event: ev})
	})
}

func (s *processService) Connect(ctx context.Context, req *connect.Request[process.ConnectRequest], stream *connect.ServerStream[process.ConnectResponse]) error {
	pid, err := s.pidOf(ctx, req.Msg.GetProcess())
	if err != nil {
		return err
	}
	ps, err := s.h.sandboxes.ConnectProcess(context.WithoutCancel(ctx), "", sandboxOf(ctx), pid)
	if err != nil {
		return rpcError(err)
	}
	return relay(ctx, s.h, ps, req.Header(), false, func(ev *process.ProcessEvent) error {
		return stream.Send(&process.ConnectResponse{Event: ev})
	})
}

// relay sends a process's events to a caller, with keepalives, until
// the process ends or the caller leaves. Leaving does not stop the
// process; reaching the caller's deadline on the stream that started it
// does.
func relay(ctx context.Context, h *Handler, ps *sandbox.ProcStream, header http.Header, started bool, send func(*process.ProcessEvent) error) error {
	defer ps.Close()
	pid := 0
	err := pump(ctx, header, ps.Next, func(n *guest.ProcEvent) (bool, error) {
		if n.Type == guest.ProcStarted {
			pid = n.PID
		}
		ev := toEvent(n)
		if ev == nil {
			return false, nil
		}
		return n.Type == guest.ProcEnded, send(ev)
	}, func() error {
		return send(&process.ProcessEvent{Event: &process.ProcessEvent_Keepalive{Keepalive: &process.ProcessEvent_KeepAlive{}}})
	})
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// The caller's own timer may close the connection a moment
		// before the server's deadline fires; either way the command's
		// time is up.
		deadline, ok := ctx.Deadline()
		if started && pid > 0 && ok && time.Until(deadline) < 250*time.Millisecond {
			bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := h.sandboxes.SignalProcess(bg, "", sandboxOf(ctx), pid, int(syscall.SIGKILL)); err != nil && h.log != nil {
				h.log.Warn("e2b: kill a process past its deadline", "sandbox.id", sandboxOf(ctx), "pid", pid, "err", err)
			}
			cancel()
		}
	}
	return err
}

// pump hands each item next yields to handle, and sends keepalives at
// the interval the caller asked for (Keepalive-Ping-Interval, in
// seconds), until handle says the stream is done, next fails or ctx
// ends. The errors are Connect's: next's failure is unavailable, the
// end of ctx deadline_exceeded (wrapping ctx's error).
func pump[T any](ctx context.Context, header http.Header, next func() (T, error), handle func(T) (done bool, err error), keepalive func() error) error {
	type item struct {
		v   T
		err error
	}
	items := make(chan item)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			v, err := next()
			select {
			case items <- item{v, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	interval := 50 * time.Second
	if v, err := strconv.Atoi(header.Get("Keepalive-Ping-Interval")); err == nil && v > 0 {
		interval = time.Duration(min(v, 3600)) * time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case it := <-items:
			if it.err != nil {
				if errors.Is(it.err, io.EOF) {
					return connect.NewError(connect.CodeUnavailable, errors.New("the sandbox ended the stream"))
				}
				return connect.NewError(connect.CodeUnavailable, fmt.Errorf("lost the sandbox's stream: %w", it.err))
			}
			if done, err := handle(it.v); err != nil || done {
				return err
			}
		case <-tick.C:
			if err := keepalive(); err != nil {
				return err
			}
		case <-ctx.Done():
			return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
		}
	}
}

func toEvent(ev *guest.ProcEvent) *process.ProcessEvent {
	data := func(d *process.ProcessEvent_DataEvent) *process.ProcessEvent {
		return &process.ProcessEvent{Event: &process.ProcessEvent_Data{Data: d}}
	}
	switch ev.Type {
	case guest.ProcStarted:
		return &process.ProcessEvent{Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: uint32(ev.PID)}}}
	case guest.ProcStdout:
		return data(&process.ProcessEvent_DataEvent{Output: &process.ProcessEvent_DataEvent_Stdout{Stdout: ev.Data}})
	case guest.ProcStderr:
		return data(&process.ProcessEvent_DataEvent{Output: &process.ProcessEvent_DataEvent_Stderr{Stderr: ev.Data}})
	case guest.ProcPTY:
		return data(&process.ProcessEvent_DataEvent{Output: &process.ProcessEvent_DataEvent_Pty{Pty: ev.Data}})
	case guest.ProcEnded:
		end := &process.ProcessEvent_EndEvent{ExitCode: int32(ev.ExitCode), Exited: ev.Exited, Status: ev.Status}
		if ev.Error != "" {
			end.Error = &ev.Error
		}
		return &process.ProcessEvent{Event: &process.ProcessEvent_End{End: end}}
	}
	return nil
}

func (s *processService) SendInput(ctx context.Context, req *connect.Request[process.SendInputRequest]) (*connect.Response[process.SendInputResponse], error) {
	pid, err := s.pidOf(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	in := req.Msg.GetInput()
	data := in.GetStdin()
	if _, ok := in.GetInput().(*process.ProcessInput_Pty); ok {
		data = in.GetPty()
	}
	if err := s.h.sandboxes.ProcessInput(ctx, "", sandboxOf(ctx), pid, data); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&process.SendInputResponse{}), nil
}

func (s *processService) SendSignal(ctx context.Context, req *connect.Request[process.SendSignalRequest]) (*connect.Response[process.SendSignalResponse], error) {
	pid, err := s.pidOf(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	sig := int(req.Msg.GetSignal())
	if sig != int(syscall.SIGKILL) && sig != int(syscall.SIGTERM) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal %d is not SIGTERM or SIGKILL", sig))
	}
	if err := s.h.sandboxes.SignalProcess(ctx, "", sandboxOf(ctx), pid, sig); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&process.SendSignalResponse{}), nil
}

func (s *processService) CloseStdin(ctx context.Context, req *connect.Request[process.CloseStdinRequest]) (*connect.Response[process.CloseStdinResponse], error) {
	pid, err := s.pidOf(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := s.h.sandboxes.CloseProcessStdin(ctx, "", sandboxOf(ctx), pid); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&process.CloseStdinResponse{}), nil
}

func (s *processService) Update(ctx context.Context, req *connect.Request[process.UpdateRequest]) (*connect.Response[process.UpdateResponse], error) {
	pid, err := s.pidOf(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if size := req.Msg.GetPty().GetSize(); size != nil {
		ts := guest.TermSize{Cols: uint16(min(size.GetCols(), 1<<15)), Rows: uint16(min(size.GetRows(), 1<<15))}
		if err := s.h.sandboxes.ResizeProcess(ctx, "", sandboxOf(ctx), pid, ts); err != nil {
			return nil, rpcError(err)
		}
	}
	return connect.NewResponse(&process.UpdateResponse{}), nil
}

type filesystemService struct {
	filesystemconnect.UnimplementedFilesystemHandler
	h *Handler
}

// maxListed bounds one ListDir answer, however deep it goes.
const maxListed = 10000

func entryInfo(fi *wire.FileInfo) *filesystem.EntryInfo {
	t := filesystem.FileType_FILE_TYPE_UNSPECIFIED
	switch fi.Type {
	case wire.FileTypeFile:
		t = filesystem.FileType_FILE_TYPE_FILE
	case wire.FileTypeDir:
		t = filesystem.FileType_FILE_TYPE_DIRECTORY
	case wire.FileTypeSymlink:
		t = filesystem.FileType_FILE_TYPE_SYMLINK
	}
	mode, _ := strconv.ParseUint(fi.Mode, 8, 32)
	return &filesystem.EntryInfo{Name: fi.Name, Type: t, Path: fi.Path, Size: fi.Size, Mode: uint32(mode),
		Permissions: permissions(fi.Type, uint32(mode)), ModifiedTime: timestamppb.New(fi.ModTime)}
}

// permissions spells a mode as ls does.
func permissions(t string, mode uint32) string {
	b := []byte("----------")
	switch t {
	case wire.FileTypeDir:
		b[0] = 'd'
	case wire.FileTypeSymlink:
		b[0] = 'l'
	}
	for i, c := range "rwxrwxrwx" {
		if mode&(1<<(8-i)) != 0 {
			b[i+1] = byte(c)
		}
	}
	return string(b)
}

func (s *filesystemService) user(req connect.AnyRequest) string {
	return userOf(req.Header(), nil)
}

func (s *filesystemService) Stat(ctx context.Context, req *connect.Request[filesystem.StatRequest]) (*connect.Response[filesystem.StatResponse], error) {
	fi, err := s.h.sandboxes.StatFile(ctx, "", sandboxOf(ctx), resolve(req.Msg.GetPath(), s.user(req)))
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&filesystem.StatResponse{Entry: entryInfo(fi)}), nil
}

func (s *filesystemService) MakeDir(ctx context.Context, req *connect.Request[filesystem.MakeDirRequest]) (*connect.Response[filesystem.MakeDirResponse], error) {
	p := resolve(req.Msg.GetPath(), s.user(req))
	id := sandboxOf(ctx)
	if _, err := s.h.sandboxes.StatFile(ctx, "", id, p); err == nil {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("%s already exists", p))
	}
	fi, err := s.h.sandboxes.Mkdir(ctx, "", id, p)
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&filesystem.MakeDirResponse{Entry: entryInfo(fi)}), nil
}

func (s *filesystemService) Move(ctx context.Context, req *connect.Request[filesystem.MoveRequest]) (*connect.Response[filesystem.MoveResponse], error) {
	u := s.user(req)
	fi, err := s.h.sandboxes.MoveFile(ctx, "", sandboxOf(ctx), resolve(req.Msg.GetSource(), u), resolve(req.Msg.GetDestination(), u))
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&filesystem.MoveResponse{Entry: entryInfo(fi)}), nil
}

func (s *filesystemService) Remove(ctx context.Context, req *connect.Request[filesystem.RemoveRequest]) (*connect.Response[filesystem.RemoveResponse], error) {
	if err := s.h.sandboxes.RemoveFile(ctx, "", sandboxOf(ctx), resolve(req.Msg.GetPath(), s.user(req)), true); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&filesystem.RemoveResponse{}), nil
}

// ListDir lists a directory to the depth asked (1: its entries only),
// breadth first, at most maxListed entries.
func (s *filesystemService) ListDir(ctx context.Context, req *connect.Request[filesystem.ListDirRequest]) (*connect.Response[filesystem.ListDirResponse], error) {
	root := resolve(req.Msg.GetPath(), s.user(req))
	depth := int(req.Msg.GetDepth())
	if depth < 1 {
		depth = 1
	}
	id := sandboxOf(ctx)
	fi, err := s.h.sandboxes.StatFile(ctx, "", id, root)
	if err != nil {
		return nil, rpcError(err)
	}
	if fi.Type != wire.FileTypeDir {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s is not a directory", root))
	}
	out := &filesystem.ListDirResponse{}
	level := []string{root}
	for d := 1; d <= depth && len(level) > 0; d++ {
		var next []string
		for _, dir := range level {
			list, err := s.h.sandboxes.ListFiles(ctx, "", id, dir)
			if err != nil {
				if d == 1 {
					return nil, rpcError(err)
				}
				continue // removed or unreadable below the top: skipped
			}
			for i := range list.Entries {
				e := &list.Entries[i]
				if len(out.Entries) >= maxListed {
					return connect.NewResponse(out), nil
				}
				out.Entries = append(out.Entries, entryInfo(e))
				if e.Type == wire.FileTypeDir {
					next = append(next, path.Join(dir, e.Name))
				}
			}
		}
		level = next
	}
	return connect.NewResponse(out), nil
}

// eventTypes maps the agent's watch events to envd's.
var eventTypes = map[string]filesystem.EventType{
	guest.WatchCreate: filesystem.EventType_EVENT_TYPE_CREATE,
	guest.WatchWrite:  filesystem.EventType_EVENT_TYPE_WRITE,
	guest.WatchRemove: filesystem.EventType_EVENT_TYPE_REMOVE,
	guest.WatchRename: filesystem.EventType_EVENT_TYPE_RENAME,
	guest.WatchChmod:  filesystem.EventType_EVENT_TYPE_CHMOD,
}

func fsEvent(ev *guest.WatchEvent) *filesystem.FilesystemEvent {
	t, ok := eventTypes[ev.Type]
	if !ok {
		return nil
	}
	out := &filesystem.FilesystemEvent{Name: ev.Name, Type: t}
	if ev.Entry != nil {
		out.Entry = entryInfo(ev.Entry)
	}
	return out
}

func (s *filesystemService) watchRequest(req connect.AnyRequest, p string, recursive, entry bool) guest.WatchRequest {
	return guest.WatchRequest{Path: resolve(p, s.user(req)), Recursive: recursive, Entry: entry}
}

// WatchDir streams a directory's changes until the caller leaves or its
// deadline passes.
func (s *filesystemService) WatchDir(ctx context.Context, req *connect.Request[filesystem.WatchDirRequest], stream *connect.ServerStream[filesystem.WatchDirResponse]) error {
	m := req.Msg
	ws, err := s.h.sandboxes.WatchDir(ctx, "", sandboxOf(ctx), s.watchRequest(req, m.GetPath(), m.GetRecursive(), m.GetIncludeEntry()))
	if err != nil {
		return rpcError(err)
	}
	defer ws.Close()
	return pump(ctx, req.Header(), ws.Next, func(ev *guest.WatchEvent) (bool, error) {
		switch ev.Type {
		case guest.WatchStarted:
			return false, stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Start{Start: &filesystem.WatchDirResponse_StartEvent{}}})
		case guest.WatchFailed:
			return true, connect.NewError(watchCode(ev.Code), errors.New(ev.Error))
		}
		if fe := fsEvent(ev); fe != nil {
			return false, stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Filesystem{Filesystem: fe}})
		}
		return false, nil
	}, func() error {
		return stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Keepalive{Keepalive: &filesystem.WatchDirResponse_KeepAlive{}}})
	})
}

func watchCode(code string) connect.Code {
	if code == guest.WatchLimitCode {
		return connect.CodeResourceExhausted
	}
	return connect.CodeInternal
}

func (s *filesystemService) CreateWatcher(ctx context.Context, req *connect.Request[filesystem.CreateWatcherRequest]) (*connect.Response[filesystem.CreateWatcherResponse], error) {
	m := req.Msg
	id, err := s.h.sandboxes.CreateWatcher(ctx, "", sandboxOf(ctx), s.watchRequest(req, m.GetPath(), m.GetRecursive(), m.GetIncludeEntry()))
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&filesystem.CreateWatcherResponse{WatcherId: id}), nil
}

func (s *filesystemService) GetWatcherEvents(ctx context.Context, req *connect.Request[filesystem.GetWatcherEventsRequest]) (*connect.Response[filesystem.GetWatcherEventsResponse], error) {
	evs, err := s.h.sandboxes.WatcherEvents(ctx, "", sandboxOf(ctx), req.Msg.GetWatcherId())
	if err != nil {
		return nil, rpcError(err)
	}
	out := &filesystem.GetWatcherEventsResponse{}
	for i := range evs {
		if fe := fsEvent(&evs[i]); fe != nil {
			out.Events = append(out.Events, fe)
		}
	}
	return connect.NewResponse(out), nil
}

func (s *filesystemService) RemoveWatcher(ctx context.Context, req *connect.Request[filesystem.RemoveWatcherRequest]) (*connect.Response[filesystem.RemoveWatcherResponse], error) {
	if err := s.h.sandboxes.RemoveWatcher(ctx, "", sandboxOf(ctx), req.Msg.GetWatcherId()); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&filesystem.RemoveWatcherResponse{}), nil
}
