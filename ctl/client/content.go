package client

import (
	"encoding/base64"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// EncodeContent returns data as the API carries file contents and output:
// as it is when it is valid UTF-8, which JSON strings must be, base64
// otherwise, with the encoding to say so.
func EncodeContent(data []byte) (content, encoding string) {
	if utf8.Valid(data) {
		return string(data), ""
	}
	return base64.StdEncoding.EncodeToString(data), api.EncodingBase64
}

// DecodeContent returns the bytes of content sent with encoding.
func DecodeContent(content, encoding string) ([]byte, error) {
	if encoding == api.EncodingBase64 {
		return base64.StdEncoding.DecodeString(content)
	}
	return []byte(content), nil
}
