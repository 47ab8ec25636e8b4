package milter

import (
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"runtime/debug"
	"strings"
	"sync/atomic"

	gomilter "github.com/emersion/go-milter"

	"github.com/listcrypt/listcrypt/milter/deliver"
	"github.com/listcrypt/listcrypt/policy"
)

// session is one MTA connection's current transaction. go-milter makes a
// new one after every final answer, so fields are per transaction.
type session struct {
	srv *Server

	queueID  string
	from     string
	policies *policy.Set
	lists    []*policy.Policy    // list recipients, in RCPT order
	rcptOf   map[string][]string // list address -> every RCPT TO spelling the MTA wrote
	others   []string            // non-list recipients
	header   bytes.Buffer        // the header block, CRLF, as received
	body     bytes.Buffer
	maxSize  int64
	tooBig   bool
	reply    int // the code of the last refusal made (refuse)
}

func (s *session) reset() {
	*s = session{srv: s.srv}
}

// Connect and Helo are masked off in the protocol options.
func (s *session) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (s *session) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.reset()
	s.from = from
	s.policies = s.srv.Policies()
	s.noteQueueID(m)
	return gomilter.RespContinue, nil
}

// noteQueueID keeps the MTA's queue id (macro "i") from whichever stage
// sends it: Postfix has it from the first accepted RCPT TO on and sends
// it at end of message (contrib/postfix/main.cf.snippet), Sendmail sends
// it with MAIL FROM by default (Milter.macros.envfrom). Each macro packet
// replaces the last (LIBRARY-NOTES), so it is read where it arrives.
func (s *session) noteQueueID(m *gomilter.Modifier) {
	if m == nil {
		return
	}
	if id := m.Macros["i"]; id != "" {
		s.queueID = id
	}
}

// RcptTo marks the transaction when a recipient is a list address under
// any spelling the MTA delivers to it (policy.Set.Recipient: case,
// quotes, address extension, source route, % hack...): a post must not
// reach the list address unencrypted by spelling it differently.
func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.noteQueueID(m)
	if p := s.policies.Recipient(rcpt, s.srv.opts.Config.Milter.RecipientDelimiter); p != nil {
		if s.rcptOf == nil {
			s.rcptOf = map[string][]string{}
		}
		if len(s.rcptOf[p.Address]) == 0 {
			s.lists = append(s.lists, p)
		}
		s.rcptOf[p.Address] = append(s.rcptOf[p.Address], rcpt)
		if policy.NormalizeAddress(rcpt) != p.Address {
			s.srv.opts.Log.Debug("list recipient under another spelling", "rcpt", rcpt, "list", p.Address)
		}
	} else {
		s.others = append(s.others, rcpt)
	}
	return gomilter.RespContinue, nil
}

func (s *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	if len(s.lists) == 0 {
		return gomilter.RespContinue, nil
	}
	if int64(s.header.Len()+len(name)+len(value)+4) > s.srv.opts.Config.Limits.MaxHeaderSize.Bytes {
		s.tooBig = true
		return gomilter.RespContinue, nil
	}
	// Postfix sends folded values with bare LF line breaks; the message
	// is rebuilt with CRLF throughout.
	value = strings.ReplaceAll(strings.ReplaceAll(value, "\r\n", "\n"), "\n", "\r\n")
	fmt.Fprintf(&s.header, "%s: %s\r\n", name, value)
	return gomilter.RespContinue, nil
}

// Headers (end of headers): a transaction with no list recipient is
// accepted here, so ordinary mail costs almost nothing.
func (s *session) Headers(_ textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	s.noteQueueID(m)
	if len(s.lists) == 0 {
		return gomilter.RespAccept, nil
	}
	if s.tooBig {
		return s.answer(s.refuse(policy.ReplyHeaderTooLarge(s.srv.opts.Config.Limits.MaxHeaderSize.Bytes))), nil
	}
	s.maxSize = s.srv.opts.Config.Limits.MaxMessageSize.Bytes
	for _, p := range s.lists {
		if p.Post.MaxSize.Bytes < s.maxSize {
			s.maxSize = p.Post.MaxSize.Bytes
		}
	}
	return gomilter.RespContinue, nil
}

// BodyChunk buffers the body up to the smallest size limit of the lists
// addressed; past it the post is refused with 552 during DATA.
func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	if int64(s.header.Len()+s.body.Len()+len(chunk)) > s.maxSize {
		return s.answer(s.refuse(policy.ReplyTooBig(s.maxSize))), nil
	}
	s.body.Write(chunk)
	return gomilter.RespContinue, nil
}

// Body is end-of-message: the post is decided and the decision carried
// out. A panic there is a bug: it is logged at Error with its stack and
// the transaction tempfailed (the sender's MTA retries; the claim's lease
// and the delivery records keep the retry exactly-once), and the
// connection goes on serving.
func (s *session) Body(m *gomilter.Modifier) (resp gomilter.Response, err error) {
	s.noteQueueID(m)
	defer func() {
		if v := recover(); v != nil {
			s.srv.opts.Log.Error("panic", "queue_id", s.queueID, "action", "tempfail", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			resp, err = s.answer(s.refuse(policy.ReplyTempFail())), nil
		}
	}()
	if hook := panicHook.Load(); hook != nil {
		(*hook)(s.from)
	}
	return s.answer(s.srv.endOfMessage(s, m)), nil
}

// answer counts the final reply to a list transaction (metrics) and
// returns it: 250 for accept and discard, else the last refusal's code.
func (s *session) answer(resp gomilter.Response) gomilter.Response {
	switch resp {
	case gomilter.RespAccept, gomilter.RespDiscard:
		s.srv.opts.Metrics.Reply(250)
	default:
		s.srv.opts.Metrics.Reply(s.reply)
	}
	return resp
}

// panicHook, set by tests only, runs at end of message with the envelope
// sender (to make a session panic on purpose).
var panicHook atomic.Pointer[func(from string)]

func (s *session) Abort(m *gomilter.Modifier) error {
	s.reset()
	return nil
}

// refuse answers with reply r (policy/replies.go). A reply-code
// response ('y') refuses the transaction with that exact text.
func (s *session) refuse(r policy.Problem) gomilter.Response {
	s.reply = r.Code
	return gomilter.NewResponseStr('y', fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, deliver.OneLine(r.Text)))
}
