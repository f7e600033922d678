package main

// Exit statuses, documented in zpipes(1).
const (
	exitOK        = 0   // success
	exitError     = 1   // the broker answered ERROR, or another failure
	exitUsage     = 2   // bad command line
	exitNoBroker  = 3   // no broker at the endpoint, or it went away
	exitBrokenOut = 141 // stdout was closed (128 + SIGPIPE)
	// 128 + n: stopped by signal n (130 for SIGINT, 143 for SIGTERM)
)

// lineError is a usage error that its one line explains, such as a bad
// endpoint: zpipes exits 2 without the usage, which would not help.
type lineError struct{ error }

func (e lineError) Unwrap() error { return e.error }
