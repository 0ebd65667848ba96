package codec

// This file holds each message's three halves of the wire layout: check
// (validation and size), appendFields and decodeFields. They list fields in
// the same order as the structs and as the tables in docs/protocol.md.

// Kind returns KindCreateSession.
func (*CreateSession) Kind() Kind { return KindCreateSession }

func (m *CreateSession) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindCreateSession)
	}
	s := sizer{lim: lim, kind: KindCreateSession}
	s.fixed(8 + len(m.Secret))
	s.capabilities(m.Capabilities)
	return s.n, s.err
}

func (m *CreateSession) appendFields(b []byte) []byte {
	b = appendU64(b, m.Nonce)
	b = append(b, m.Secret[:]...)
	return appendCapabilities(b, m.Capabilities)
}

func (m *CreateSession) decodeFields(d decoder) error {
	m.Nonce = d.u64("nonce")
	m.Secret = d.secret("secret")
	m.Capabilities = d.capabilities()
	return d.finish()
}

// Kind returns KindContinueSession.
func (*ContinueSession) Kind() Kind { return KindContinueSession }

func (m *ContinueSession) check(Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindContinueSession)
	}
	return len(m.SessionID) + len(m.Secret) + 8, nil
}

func (m *ContinueSession) appendFields(b []byte) []byte {
	b = append(b, m.SessionID[:]...)
	b = append(b, m.Secret[:]...)
	return appendU64(b, m.Nonce)
}

func (m *ContinueSession) decodeFields(d decoder) error {
	m.SessionID = d.sessionID("session_id")
	m.Secret = d.secret("secret")
	m.Nonce = d.u64("nonce")
	return d.finish()
}

// Kind returns KindKeepAlive.
func (*KeepAlive) Kind() Kind { return KindKeepAlive }

func (m *KeepAlive) check(Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindKeepAlive)
	}
	return 8 + 8, nil
}

func (m *KeepAlive) appendFields(b []byte) []byte {
	return appendU64(appendI64(b, m.Timestamp), m.AckedUpTo)
}

func (m *KeepAlive) decodeFields(d decoder) error {
	m.Timestamp = d.i64("timestamp")
	m.AckedUpTo = d.u64("acked_up_to")
	return d.finish()
}

// Kind returns KindClientRequest.
func (*ClientRequest) Kind() Kind { return KindClientRequest }

func (m *ClientRequest) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindClientRequest)
	}
	s := sizer{lim: lim, kind: KindClientRequest}
	s.id("request_id", m.RequestID)
	s.id("lowest_pending", m.LowestPending)
	if m.LowestPending > m.RequestID {
		// The request being sent is itself pending, so the lowest pending
		// id can never be above it.
		s.invalid("lowest_pending", "must not exceed request_id")
	}
	s.bytes("payload", m.Payload)
	return s.n, s.err
}

func (m *ClientRequest) appendFields(b []byte) []byte {
	b = appendU64(b, m.RequestID)
	b = appendU64(b, m.LowestPending)
	return appendBytes(b, m.Payload)
}

func (m *ClientRequest) decodeFields(d decoder) error {
	m.RequestID = d.u64("request_id")
	m.LowestPending = d.u64("lowest_pending")
	m.Payload = d.bytes("payload")
	return d.finish()
}

// Kind returns KindQuery.
func (*Query) Kind() Kind { return KindQuery }

func (m *Query) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindQuery)
	}
	s := sizer{lim: lim, kind: KindQuery}
	s.fixed(8 + 1)
	s.bytes("payload", m.Payload)
	return s.n, s.err
}

func (m *Query) appendFields(b []byte) []byte {
	b = appendU64(b, m.CorrelationID)
	b = append(b, byte(m.Consistency))
	return appendBytes(b, m.Payload)
}

func (m *Query) decodeFields(d decoder) error {
	m.CorrelationID = d.u64("correlation_id")
	m.Consistency = Consistency(d.u8("consistency"))
	m.Payload = d.bytes("payload")
	return d.finish()
}

// Kind returns KindServerRequestAck.
func (*ServerRequestAck) Kind() Kind { return KindServerRequestAck }

func (m *ServerRequestAck) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindServerRequestAck)
	}
	s := sizer{lim: lim, kind: KindServerRequestAck}
	s.id("request_id", m.RequestID)
	return s.n, s.err
}

func (m *ServerRequestAck) appendFields(b []byte) []byte {
	return appendU64(b, m.RequestID)
}

func (m *ServerRequestAck) decodeFields(d decoder) error {
	m.RequestID = d.u64("request_id")
	return d.finish()
}

// Kind returns KindCloseSession.
func (*CloseSession) Kind() Kind { return KindCloseSession }

func (m *CloseSession) check(Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindCloseSession)
	}
	return 1, nil
}

func (m *CloseSession) appendFields(b []byte) []byte {
	return append(b, byte(m.Reason))
}

func (m *CloseSession) decodeFields(d decoder) error {
	m.Reason = d.code("reason")
	return d.finish()
}

// Kind returns KindSessionCreated.
func (*SessionCreated) Kind() Kind { return KindSessionCreated }

func (m *SessionCreated) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindSessionCreated)
	}
	s := sizer{lim: lim, kind: KindSessionCreated}
	s.fixed(len(m.SessionID) + 8)
	s.duration("keep_alive_interval_ms", m.KeepAliveInterval)
	s.duration("session_timeout_ms", m.SessionTimeout)
	s.fixed(8)
	s.members(m.Members)
	return s.n, s.err
}

func (m *SessionCreated) appendFields(b []byte) []byte {
	b = append(b, m.SessionID[:]...)
	b = appendU64(b, m.Nonce)
	b = appendDuration(b, m.KeepAliveInterval)
	b = appendDuration(b, m.SessionTimeout)
	b = appendU64(b, m.LeaderID)
	return appendMembers(b, m.Members)
}

func (m *SessionCreated) decodeFields(d decoder) error {
	m.SessionID = d.sessionID("session_id")
	m.Nonce = d.u64("nonce")
	m.KeepAliveInterval = d.duration("keep_alive_interval_ms")
	m.SessionTimeout = d.duration("session_timeout_ms")
	m.LeaderID = d.u64("leader_id")
	m.Members = d.members()
	return d.finish()
}

// Kind returns KindSessionContinued.
func (*SessionContinued) Kind() Kind { return KindSessionContinued }

func (m *SessionContinued) check(Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindSessionContinued)
	}
	return 8, nil
}

func (m *SessionContinued) appendFields(b []byte) []byte {
	return appendU64(b, m.Nonce)
}

func (m *SessionContinued) decodeFields(d decoder) error {
	m.Nonce = d.u64("nonce")
	return d.finish()
}

// Kind returns KindSessionRejected.
func (*SessionRejected) Kind() Kind { return KindSessionRejected }

func (m *SessionRejected) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindSessionRejected)
	}
	s := sizer{lim: lim, kind: KindSessionRejected}
	s.fixed(8 + 1)
	s.leader(m.Leader)
	s.str("message", m.Message)
	return s.n, s.err
}

func (m *SessionRejected) appendFields(b []byte) []byte {
	b = appendU64(b, m.Nonce)
	b = append(b, byte(m.Reason))
	b = appendLeader(b, m.Leader)
	return appendStr(b, m.Message)
}

func (m *SessionRejected) decodeFields(d decoder) error {
	m.Nonce = d.u64("nonce")
	m.Reason = d.code("reason")
	m.Leader = d.leader()
	m.Message = d.str("message")
	return d.finish()
}

// Kind returns KindSessionClosed.
func (*SessionClosed) Kind() Kind { return KindSessionClosed }

func (m *SessionClosed) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindSessionClosed)
	}
	s := sizer{lim: lim, kind: KindSessionClosed}
	s.fixed(1)
	s.leader(m.Leader)
	s.str("message", m.Message)
	return s.n, s.err
}

func (m *SessionClosed) appendFields(b []byte) []byte {
	b = append(b, byte(m.Reason))
	b = appendLeader(b, m.Leader)
	return appendStr(b, m.Message)
}

func (m *SessionClosed) decodeFields(d decoder) error {
	m.Reason = d.code("reason")
	m.Leader = d.leader()
	m.Message = d.str("message")
	return d.finish()
}

// Kind returns KindKeepAliveResponse.
func (*KeepAliveResponse) Kind() Kind { return KindKeepAliveResponse }

func (m *KeepAliveResponse) check(Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindKeepAliveResponse)
	}
	return 8, nil
}

func (m *KeepAliveResponse) appendFields(b []byte) []byte {
	return appendI64(b, m.Timestamp)
}

func (m *KeepAliveResponse) decodeFields(d decoder) error {
	m.Timestamp = d.i64("timestamp")
	return d.finish()
}

// Kind returns KindClientResponse.
func (*ClientResponse) Kind() Kind { return KindClientResponse }

func (m *ClientResponse) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindClientResponse)
	}
	s := sizer{lim: lim, kind: KindClientResponse}
	s.id("request_id", m.RequestID)
	s.bytes("result", m.Result)
	return s.n, s.err
}

func (m *ClientResponse) appendFields(b []byte) []byte {
	return appendBytes(appendU64(b, m.RequestID), m.Result)
}

func (m *ClientResponse) decodeFields(d decoder) error {
	m.RequestID = d.u64("request_id")
	m.Result = d.bytes("result")
	return d.finish()
}

// Kind returns KindRequestError.
func (*RequestError) Kind() Kind { return KindRequestError }

func (m *RequestError) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindRequestError)
	}
	// RequestID 0 is allowed: it answers a ClientRequest too malformed to
	// carry a readable id.
	s := sizer{lim: lim, kind: KindRequestError}
	s.fixed(8 + 1 + 4)
	s.str("message", m.Message)
	s.leader(m.Leader)
	return s.n, s.err
}

func (m *RequestError) appendFields(b []byte) []byte {
	b = appendU64(b, m.RequestID)
	b = append(b, byte(m.Reason))
	b = appendU32(b, m.AppCode)
	b = appendStr(b, m.Message)
	return appendLeader(b, m.Leader)
}

func (m *RequestError) decodeFields(d decoder) error {
	m.RequestID = d.u64("request_id")
	m.Reason = d.code("reason")
	m.AppCode = d.u32("app_code")
	m.Message = d.str("message")
	m.Leader = d.leader()
	return d.finish()
}

// Kind returns KindServerRequest.
func (*ServerRequest) Kind() Kind { return KindServerRequest }

func (m *ServerRequest) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindServerRequest)
	}
	s := sizer{lim: lim, kind: KindServerRequest}
	s.id("request_id", m.RequestID)
	s.fixed(8)
	s.bytes("payload", m.Payload)
	return s.n, s.err
}

func (m *ServerRequest) appendFields(b []byte) []byte {
	b = appendU64(b, m.RequestID)
	b = appendI64(b, m.CreatedAt)
	return appendBytes(b, m.Payload)
}

func (m *ServerRequest) decodeFields(d decoder) error {
	m.RequestID = d.u64("request_id")
	m.CreatedAt = d.i64("created_at")
	m.Payload = d.bytes("payload")
	return d.finish()
}

// Kind returns KindQueryResponse.
func (*QueryResponse) Kind() Kind { return KindQueryResponse }

func (m *QueryResponse) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindQueryResponse)
	}
	s := sizer{lim: lim, kind: KindQueryResponse}
	s.fixed(8)
	s.bytes("result", m.Result)
	return s.n, s.err
}

func (m *QueryResponse) appendFields(b []byte) []byte {
	return appendBytes(appendU64(b, m.CorrelationID), m.Result)
}

func (m *QueryResponse) decodeFields(d decoder) error {
	m.CorrelationID = d.u64("correlation_id")
	m.Result = d.bytes("result")
	return d.finish()
}

// Kind returns KindQueryError.
func (*QueryError) Kind() Kind { return KindQueryError }

func (m *QueryError) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindQueryError)
	}
	s := sizer{lim: lim, kind: KindQueryError}
	s.fixed(8 + 1 + 4)
	s.str("message", m.Message)
	s.leader(m.Leader)
	return s.n, s.err
}

func (m *QueryError) appendFields(b []byte) []byte {
	b = appendU64(b, m.CorrelationID)
	b = append(b, byte(m.Reason))
	b = appendU32(b, m.AppCode)
	b = appendStr(b, m.Message)
	return appendLeader(b, m.Leader)
}

func (m *QueryError) decodeFields(d decoder) error {
	m.CorrelationID = d.u64("correlation_id")
	m.Reason = d.code("reason")
	m.AppCode = d.u32("app_code")
	m.Message = d.str("message")
	m.Leader = d.leader()
	return d.finish()
}

// Kind returns KindNotification.
func (*Notification) Kind() Kind { return KindNotification }

func (m *Notification) check(lim Limits) (int, error) {
	if m == nil {
		return 0, nilMessage(KindNotification)
	}
	s := sizer{lim: lim, kind: KindNotification}
	s.fixed(1)
	if m.Flags&^NotificationLost != 0 {
		s.invalid("flags", "has bits other than bit 0 (lost) set")
	}
	s.bytes("payload", m.Payload)
	return s.n, s.err
}

func (m *Notification) appendFields(b []byte) []byte {
	b = append(b, m.Flags)
	return appendBytes(b, m.Payload)
}

func (m *Notification) decodeFields(d decoder) error {
	m.Flags = d.u8("flags")
	m.Payload = d.bytes("payload")
	return d.finish()
}
