package mcp

import (
	"context"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// answerAll is a transport whose end of input waits until every request
// read from it has been answered. The SDK stops writing and cancels the
// requests in flight as soon as its input ends, so that a client that
// writes its requests and closes its end (printf … | sandboxctl mcp)
// would get no answer at all.
type answerAll struct{ sdk.Transport }

func (t answerAll) Connect(ctx context.Context) (sdk.Connection, error) {
	conn, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &answeringConn{Connection: conn, pending: map[jsonrpc.ID]bool{}, answered: make(chan struct{}, 1), closed: make(chan struct{})}, nil
}

// answeringConn counts the requests read that have no response written
// yet. It hides the SDK's own connection's session updates, by which it
// refuses JSON-RPC batches once the client speaks 2025-06-18 or later:
// batches are served whatever the version.
type answeringConn struct {
	sdk.Connection
	mu        sync.Mutex
	pending   map[jsonrpc.ID]bool
	answered  chan struct{} // a response was written
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *answeringConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if err != nil {
		// The end of input, or input that is not JSON-RPC: what came
		// before is answered first.
		c.awaitAnswers(ctx)
		return nil, err
	}
	if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
		c.mu.Lock()
		c.pending[req.ID] = true
		c.mu.Unlock()
	}
	return msg, nil
}

func (c *answeringConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	err := c.Connection.Write(ctx, msg)
	// Written or not, this response is all the request will get.
	if resp, ok := msg.(*jsonrpc.Response); ok {
		c.mu.Lock()
		delete(c.pending, resp.ID)
		c.mu.Unlock()
		select {
		case c.answered <- struct{}{}:
		default:
		}
	}
	return err
}

func (c *answeringConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Connection.Close()
}

// awaitAnswers returns once no request waits for its response, or the
// connection is closed, or ctx is done.
func (c *answeringConn) awaitAnswers(ctx context.Context) {
	for {
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-c.answered:
		case <-c.closed:
			return
		case <-ctx.Done():
			return
		}
	}
}
