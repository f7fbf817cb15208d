package dockerfile

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	df := `# syntax is BuildKit's
ARG BASE=busybox
FROM $BASE
ENV A=1 B="two words" \
    C=${A}x
RUN echo \
  hi
RUN ["sh", "-c", "echo json"]
COPY --chown=1000:1000 src/ /dst/
WORKDIR /w
USER nobody
CMD ["sh"]
`
	ins, err := Parse(strings.NewReader(df))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, in := range ins {
		cmds = append(cmds, in.Cmd)
	}
	if want := []string{"ARG", "FROM", "ENV", "RUN", "RUN", "COPY", "WORKDIR", "USER", "CMD"}; !reflect.DeepEqual(cmds, want) {
		t.Fatalf("instructions %v, want %v", cmds, want)
	}
	env := Env{"A": "1"}
	pairs, err := Pairs(ins[2], env)
	if err != nil || !reflect.DeepEqual(pairs, [][2]string{{"A", "1"}, {"B", "two words"}, {"C", "1x"}}) {
		t.Fatalf("ENV pairs %q %v", pairs, err)
	}
	if from, _ := Word(ins[1].Args[0], Env{"BASE": "busybox"}); from != "busybox" {
		t.Fatalf("FROM $BASE expanded to %q", from)
	}
	if !ins[4].JSON || !reflect.DeepEqual(ins[4].Args, []string{"sh", "-c", "echo json"}) || ins[3].JSON {
		t.Fatalf("RUN forms: %+v %+v", ins[3], ins[4])
	}
	if ins[5].Flags[0] != "--chown=1000:1000" || ins[3].Line != 6 {
		t.Fatalf("flags or lines: %+v", ins)
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	for df, want := range map[string]string{
		"FROM busybox\nRUN true\nFETCH http://x\n":      "line 3: unknown instruction FETCH",
		"FROM a\nFROM b\n":                              "line 2: a second FROM",
		"RUN true\nFROM a\n":                            "line 1: RUN before FROM",
		"FROM a\nCOPY only-one\n":                       "line 2: COPY needs at least 2",
		"FROM a\nRUN --mount=type=cache,target=/x ls\n": "line 2: RUN --mount=type=cache,target=/x is not supported",
		"# nothing\n":                                   "no instructions",
		"ARG A=1\n":                                     "no FROM",
	} {
		_, err := Parse(strings.NewReader(df))
		var de *Error
		if !errors.As(err, &de) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", df, err, want)
		}
	}
}
