package main

import "syscall"

// Exit statuses. exitStatuses below says what each means, for zpipes(1).
const (
	exitOK        = 0                                 // success
	exitError     = 1                                 // the broker answered ERROR, or another failure
	exitUsage     = 2                                 // bad command line
	exitNoBroker  = 3                                 // no broker at the endpoint, or it went away
	exitSignal    = 128                               // + n: stopped by signal n
	exitBrokenOut = exitSignal + int(syscall.SIGPIPE) // stdout was closed
)

// exitStatus is what an exit status means.
type exitStatus struct {
	Code    int
	Meaning string
}

// exitStatuses is the EXIT STATUS section of zpipes(1): every status zpipes
// exits with, in order.
var exitStatuses = []exitStatus{
	{exitOK, "Success. zpipes serve also exits 0 when SIGINT, SIGTERM or SIGHUP stops it."},
	{exitError, "The broker answered ERROR (for example, no such pipe), or another failure."},
	{exitUsage, "Usage error: a bad command line or endpoint. The error is printed on standard error, " +
		"with the usage when it helps."},
	{exitNoBroker, "No broker at the endpoint, the connection to it was lost, " +
		"or it stayed silent beyond --timeout while a request was outstanding."},
	{exitSignal + int(syscall.SIGINT), "Interrupted by SIGINT (128 + 2). A second SIGINT or SIGTERM ends zpipes at once."},
	{exitBrokenOut, "Standard output was closed (128 + SIGPIPE)."},
	{exitSignal + int(syscall.SIGTERM), "Stopped by SIGTERM (128 + 15). A second SIGINT or SIGTERM ends zpipes at once."},
}

// lineError is a usage error that its one line explains, such as a bad
// endpoint: zpipes exits 2 without the usage, which would not help.
type lineError struct{ error }

func (e lineError) Unwrap() error { return e.error }
