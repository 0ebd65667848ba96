package codec

import "strconv"

var kindNames = [...]string{
	KindCreateSession:     "CreateSession",
	KindContinueSession:   "ContinueSession",
	KindKeepAlive:         "KeepAlive",
	KindClientRequest:     "ClientRequest",
	KindQuery:             "Query",
	KindServerRequestAck:  "ServerRequestAck",
	KindCloseSession:      "CloseSession",
	KindSessionCreated:    "SessionCreated",
	KindSessionContinued:  "SessionContinued",
	KindSessionRejected:   "SessionRejected",
	KindSessionClosed:     "SessionClosed",
	KindKeepAliveResponse: "KeepAliveResponse",
	KindClientResponse:    "ClientResponse",
	KindRequestError:      "RequestError",
	KindServerRequest:     "ServerRequest",
	KindQueryResponse:     "QueryResponse",
	KindQueryError:        "QueryError",
	KindNotification:      "Notification",
}

// String returns the kind's name, such as "CreateSession", or "Kind(0x99)"
// for a kind this version does not know.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "Kind(0x" + strconv.FormatUint(uint64(k), 16) + ")"
}

var codeNames = [...]string{
	CodeUnspecified:        "Unspecified",
	CodeNotLeader:          "NotLeader",
	CodeClusterUnavailable: "ClusterUnavailable",
	CodeSessionNotFound:    "SessionNotFound",
	CodeSessionExpired:     "SessionExpired",
	CodeBadSecret:          "BadSecret",
	CodeRejected:           "Rejected",
	CodeRateLimited:        "RateLimited",
	CodeTooManySessions:    "TooManySessions",
	CodeOverloaded:         "Overloaded",
	CodeOutcomeUnknown:     "OutcomeUnknown",
	CodeResponseEvicted:    "ResponseEvicted",
	CodeTooManyInFlight:    "TooManyInFlight",
	CodeTooLarge:           "TooLarge",
	CodeMalformed:          "Malformed",
	CodeApplication:        "Application",
	CodeShuttingDown:       "ShuttingDown",
	CodeClientClosed:       "ClientClosed",
	CodeSessionMoved:       "SessionMoved",
	CodeInternal:           "Internal",
	CodeUnsupported:        "Unsupported",
	CodeOutOfOrder:         "OutOfOrder",
	CodeQuotaExceeded:      "QuotaExceeded",
}

// String returns the code's name, such as "NotLeader", or "Code(99)" for a
// code this version does not know.
func (c Code) String() string {
	if c.Known() {
		return codeNames[c]
	}
	return "Code(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// Known reports whether this version of the protocol defines c. Unknown codes
// decode unchanged; a client treats one like CodeUnspecified: a failure that
// is not safe to retry blindly.
func (c Code) Known() bool { return int(c) < len(codeNames) }

// Retryable reports whether a client may send the same request again (same
// request id, same nonce and secret, same query) without risking a duplicate
// effect, after backing off and, for codes that carry a leader hint, at the
// hinted leader. docs/protocol.md has the table. Codes for which the session
// is gone, the input is wrong, or the command already ran are not retryable;
// unknown codes are not retryable.
func (c Code) Retryable() bool {
	switch c {
	case CodeNotLeader, CodeClusterUnavailable, CodeRateLimited, CodeTooManySessions,
		CodeOverloaded, CodeOutcomeUnknown, CodeTooManyInFlight, CodeShuttingDown, CodeOutOfOrder:
		return true
	}
	return false
}

// String returns "Linearizable", "Stale" or "Consistency(n)".
func (c Consistency) String() string {
	switch c {
	case Linearizable:
		return "Linearizable"
	case Stale:
		return "Stale"
	}
	return "Consistency(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// Known reports whether this version defines c. Decode accepts every value
// so that a server can answer an unknown one with CodeUnsupported.
func (c Consistency) Known() bool { return c == Linearizable || c == Stale }
