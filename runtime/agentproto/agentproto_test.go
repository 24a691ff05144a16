package agentproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// Requests and their files' raw contents come back as they were sent, one
// after another on one stream, whatever bytes the files hold.
func TestRequestRoundTrip(t *testing.T) {
	var stream bytes.Buffer
	first := Request{Args: []string{"run"}, Files: []File{
		{Path: "a.txt", Data: []byte("line\n{\"args\":[\"x\"]}\n"), Mode: 0o644},
		{Path: "empty", Data: nil, Mode: 0o600},
		{Path: "bin", Data: []byte{0, 0xff, '\n', 0}, Mode: 0o755},
	}}
	second := Request{Kill: true}
	for _, r := range []Request{first, second} {
		if err := WriteRequest(&stream, r); err != nil {
			t.Fatal(err)
		}
	}
	if first.Files[0].Size != 0 {
		t.Error("WriteRequest changed the caller's files")
	}
	in := bufio.NewReader(&stream)
	got, err := ReadRequest(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Files) != 3 || got.Args[0] != "run" {
		t.Fatalf("first request: %+v", got)
	}
	for i, f := range got.Files {
		want := first.Files[i]
		if f.Path != want.Path || f.Mode != want.Mode || !bytes.Equal(f.Data, want.Data) || f.Size != int64(len(want.Data)) {
			t.Errorf("file %d: %+v, want %+v", i, f, want)
		}
	}
	if got, err := ReadRequest(in); err != nil || !got.Kill {
		t.Fatalf("second request: %+v %v", got, err)
	}
	if _, err := ReadRequest(in); err != io.EOF {
		t.Errorf("at the end: %v, want EOF", err)
	}
}

// A stream cut inside a request's files, or a size past the bound, is an
// error, not a short file.
func TestRequestCutShort(t *testing.T) {
	var stream bytes.Buffer
	WriteRequest(&stream, Request{Args: []string{"x"}, Files: []File{{Path: "f", Data: []byte("12345")}}})
	cut := stream.Bytes()[:stream.Len()-2]
	if _, err := ReadRequest(bufio.NewReader(bytes.NewReader(cut))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut in a file: %v", err)
	}
	huge := []byte(`{"args":["x"],"files":[{"path":"f","size":1099511627776,"mode":420}]}` + "\n")
	if _, err := ReadRequest(bufio.NewReader(bytes.NewReader(huge))); err == nil {
		t.Error("a file of 1 TiB was taken")
	}
}
