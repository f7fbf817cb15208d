// Package dockerfile reads Dockerfiles: BuildKit's parser for the syntax
// (continuations, JSON and shell forms, parser directives) and its shell
// lexer for variables and quotes; this package checks the instructions
// warren builds and names the line of anything it does not.
package dockerfile

import (
	"fmt"
	"io"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// MaxSize bounds a Dockerfile.
const MaxSize = 1 << 20

// Instruction is one instruction as written.
type Instruction struct {
	Line int
	// Cmd is the instruction in capitals: FROM, RUN, COPY, ...
	Cmd string
	// Args are its words, unexpanded (for ENV and LABEL: key, value
	// pairs). JSON says RUN, CMD or ENTRYPOINT had the exec (JSON) form.
	Args     []string
	JSON     bool
	Flags    []string
	Original string
}

// Error is a Dockerfile at fault, with its line.
type Error struct {
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("Dockerfile line %d: %s", e.Line, e.Msg)
	}
	return "Dockerfile: " + e.Msg
}

// known are the instructions warren builds, and how many words each needs.
var known = map[string]int{
	"FROM": 1, "RUN": 1, "COPY": 2, "ADD": 2, "ENV": 1, "WORKDIR": 1, "USER": 1, "ARG": 1,
	"CMD": 1, "ENTRYPOINT": 1, "LABEL": 1, "EXPOSE": 1, "SHELL": 1, "STOPSIGNAL": 1, "VOLUME": 1, "HEALTHCHECK": 1,
}

// Parse reads a Dockerfile. It allows one build stage: ARGs, then FROM,
// then the rest.
func Parse(r io.Reader) ([]Instruction, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, &Error{Msg: fmt.Sprintf("larger than %d bytes", MaxSize)}
	}
	res, err := parser.Parse(strings.NewReader(string(b)))
	if err != nil {
		return nil, &Error{Msg: err.Error()}
	}
	var out []Instruction
	froms := 0
	for _, n := range res.AST.Children {
		in := Instruction{Line: n.StartLine, Cmd: strings.ToUpper(n.Value), JSON: n.Attributes["json"], Flags: n.Flags, Original: n.Original}
		for x := n.Next; x != nil; x = x.Next {
			in.Args = append(in.Args, x.Value)
		}
		need, ok := known[in.Cmd]
		if !ok {
			return nil, &Error{Line: in.Line, Msg: fmt.Sprintf("unknown instruction %s", in.Cmd)}
		}
		if len(n.Heredocs) > 0 {
			return nil, &Error{Line: in.Line, Msg: "heredocs are not supported"}
		}
		words := 0
		for _, a := range in.Args {
			if a != "" {
				words++
			}
		}
		if words < need {
			return nil, &Error{Line: in.Line, Msg: fmt.Sprintf("%s needs at least %d argument(s)", in.Cmd, need)}
		}
		switch in.Cmd {
		case "FROM":
			if froms++; froms > 1 {
				return nil, &Error{Line: in.Line, Msg: "a second FROM: multi-stage builds are not supported"}
			}
		case "ARG":
		default:
			if froms == 0 {
				return nil, &Error{Line: in.Line, Msg: in.Cmd + " before FROM"}
			}
		}
		for _, f := range in.Flags {
			if in.Cmd != "COPY" && in.Cmd != "ADD" || !(strings.HasPrefix(f, "--chown=") || strings.HasPrefix(f, "--chmod=")) {
				return nil, &Error{Line: in.Line, Msg: fmt.Sprintf("%s %s is not supported", in.Cmd, f)}
			}
		}
		out = append(out, in)
	}
	if froms == 0 {
		return nil, &Error{Msg: "no FROM"}
	}
	return out, nil
}

// Env is what variables expand against: ARGs and ENVs so far.
type Env map[string]string

func (e Env) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e Env) Keys() []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	return keys
}

var lex = shell.NewLex('\\')

// Word expands variables in a word and removes its quotes.
func Word(w string, env Env) (string, error) {
	s, _, err := lex.ProcessWord(w, env)
	return s, err
}

// Words expands every word.
func Words(ws []string, env Env) ([]string, error) {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		s, err := Word(w, env)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Pairs reads ENV and LABEL arguments (key, value, separator triples) as
// expanded key/value pairs in order.
func Pairs(in Instruction, env Env) ([][2]string, error) {
	var out [][2]string
	for i := 0; i+1 < len(in.Args); i += 3 {
		k, err := Word(in.Args[i], env)
		if err != nil {
			return nil, &Error{Line: in.Line, Msg: err.Error()}
		}
		v, err := Word(in.Args[i+1], env)
		if err != nil {
			return nil, &Error{Line: in.Line, Msg: err.Error()}
		}
		if k == "" {
			return nil, &Error{Line: in.Line, Msg: in.Cmd + " with an empty name"}
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}
