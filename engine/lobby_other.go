//go:build !linux

package engine

// lobbyPoll: without epoll, each lobby waiter waits on a goroutine of its
// own (Server.wait); newLobbyPoll makes none.
type lobbyPoll struct{ running bool }

func newLobbyPoll() *lobbyPoll { return nil }

func (*lobbyPoll) add(*waiter) bool { return false }
func (*lobbyPoll) remove(*waiter)   {}
func (*lobbyPoll) interrupt()       {}
func (*lobbyPoll) close()           {}

// pollLobby is never started: add holds no waiter.
func (s *Server) pollLobby() { s.lobby.wg.Done() }
