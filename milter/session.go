package milter

import (
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"strings"

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
	return gomilter.RespContinue, nil
}

// RcptTo marks the transaction when a recipient is a list address under
// any spelling the MTA delivers to it (policy.Set.Recipient: case,
// quotes, address extension, source route, % hack...): a post must not
// reach the list address unencrypted by spelling it differently.
func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
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
	if len(s.lists) == 0 {
		return gomilter.RespAccept, nil
	}
	if s.tooBig {
		return s.refuse(policy.ReplyHeaderTooLarge(s.srv.opts.Config.Limits.MaxHeaderSize.Bytes)), nil
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
		return s.refuse(policy.ReplyTooBig(s.maxSize)), nil
	}
	s.body.Write(chunk)
	return gomilter.RespContinue, nil
}

// Body is end-of-message: the post is decided and the decision carried out.
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	s.queueID = m.Macros["i"]
	return s.srv.endOfMessage(s, m), nil
}

func (s *session) Abort(m *gomilter.Modifier) error {
	s.reset()
	return nil
}

// refuse answers with reply r (policy/replies.go). A reply-code
// response ('y') refuses the transaction with that exact text.
func (s *session) refuse(r policy.Problem) gomilter.Response {
	return gomilter.NewResponseStr('y', fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, deliver.OneLine(r.Text)))
}
