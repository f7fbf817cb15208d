package wire

import (
	"fmt"
	"net/http"
)

// ErrorCode says what kind of failure an error answer is. Clients branch
// on it, not on the message.
type ErrorCode string

// The codes and the HTTP status each is answered with.
const (
	CodeBadRequest          ErrorCode = "bad_request"          // 400; Field names the input at fault
	CodeUnauthorized        ErrorCode = "unauthorized"         // 401
	CodeForbidden           ErrorCode = "forbidden"            // 403
	CodeNotFound            ErrorCode = "not_found"            // 404
	CodeConflict            ErrorCode = "conflict"             // 409: the sandbox's state does not allow it
	CodeTooLarge            ErrorCode = "too_large"            // 413
	CodeTooManyRequests     ErrorCode = "too_many_requests"    // 429: try again later
	CodeQuotaExceeded       ErrorCode = "quota_exceeded"       // 429: the org's quota named by Field is used up
	CodeInternal            ErrorCode = "internal"             // 500
	CodeUnavailable         ErrorCode = "unavailable"          // 503
	CodeInsufficientStorage ErrorCode = "insufficient_storage" // 507: the sandbox's disk is full
)

var statusOf = map[ErrorCode]int{
	CodeBadRequest: http.StatusBadRequest, CodeUnauthorized: http.StatusUnauthorized, CodeForbidden: http.StatusForbidden,
	CodeNotFound: http.StatusNotFound, CodeConflict: http.StatusConflict, CodeTooLarge: http.StatusRequestEntityTooLarge,
	CodeTooManyRequests: http.StatusTooManyRequests, CodeQuotaExceeded: http.StatusTooManyRequests, CodeInternal: http.StatusInternalServerError,
	CodeUnavailable: http.StatusServiceUnavailable, CodeInsufficientStorage: http.StatusInsufficientStorage,
}

// Status is the HTTP status an error of this code is answered with.
func (c ErrorCode) Status() int {
	if s, ok := statusOf[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// CodeForStatus is the code of an answer with this status that carried no
// error body (a proxy's, say).
func CodeForStatus(status int) ErrorCode {
	// In order: a status more than one code shares (429) maps to the
	// general one.
	for _, c := range []ErrorCode{CodeBadRequest, CodeUnauthorized, CodeForbidden, CodeNotFound, CodeConflict, CodeTooLarge,
		CodeTooManyRequests, CodeInternal, CodeUnavailable, CodeInsufficientStorage} {
		if statusOf[c] == status {
			return c
		}
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeBadRequest
}

// Error is what went wrong: the "error" member of every error answer, and
// of the error frame that ends a WebSocket.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	// Field names the request field, query parameter or path at fault.
	Field string `json:"field,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s (%s, field %s)", e.Message, e.Code, e.Field)
	}
	return fmt.Sprintf("%s (%s)", e.Message, e.Code)
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error Error `json:"error"`
}

// ErrorFrame is the last text message of a WebSocket the server ends with
// an error; Type is FrameError.
type ErrorFrame struct {
	Type  string `json:"type"`
	Error Error  `json:"error"`
}

// WebSocket subprotocols. A client that cannot send an Authorization
// header on a WebSocket (a browser) offers two subprotocols: Protocol, which
// the server selects, and ProtocolKeyPrefix followed by its API key.
const (
	Protocol          = "warren.v1"
	ProtocolKeyPrefix = "warren.key."
)
