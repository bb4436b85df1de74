package engine

// Hooks for the package's tests, kept out of the production files' API.

// quietReaper keeps s's reaper from ringing loops in solo waits, so that a
// test sees the other wake-ups do their job. Call it before Serve.
func quietReaper(s *Server) { s.reaperQuiet = true }
