package gitipc

import "errors"

// ErrUnknownSubcommand is returned by Tool.Run for a name that is not in
// Subcommands, and for start-daemon without a daemon command.
var ErrUnknownSubcommand = errors.New("gitipc: unknown simple-ipc subcommand")
