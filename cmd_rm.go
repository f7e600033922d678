package main

import "errors"

// RmCmd stands for rm, delete and remove, which are not zpipes commands:
// people who know rm(1) try them, and kong alone would suggest ls. A pipe
// goes away once it is closed and empty, so they are sent to close. The
// command takes any arguments, flags among them, so that the message is the
// same whatever follows.
type RmCmd struct {
	Args []string `arg:"" optional:""`
}

func (RmCmd) Validate() error {
	return lineError{errors.New(`not a zpipes command; a pipe goes away once it is closed and empty: use "zpipes close PIPE"`)}
}
