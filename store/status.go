package store

// QueueDepth is how many writes wait in the queue or are being made.
func (s *Store) QueueDepth() int { return int(max(s.pending.Load(), 0)) }

// Status is the store for /status: where it is and how it fares, never a
// credential or a key.
type Status struct {
	URL      string `json:"url"`
	Endpoint string `json:"endpoint,omitempty"`
	Up       bool   `json:"up"`
	Breaker  string `json:"breaker"`
	// KeyFrom says what the objects are sealed with: app_secret (a key
	// derived from each app's secret) or store_key_file.
	KeyFrom    string `json:"key_from"`
	TTL        string `json:"ttl"`
	QueueDepth int    `json:"write_queue_depth"`
	Drops      uint64 `json:"write_drops"`
	// Bytes and MaxBytes: the directory store's size as of its last scan
	// and writes since, and its bound.
	Bytes    int64 `json:"bytes,omitempty"`
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// Status reports the store.
func (s *Store) Status() Status {
	state := s.breaker.State()
	st := Status{URL: s.location, Up: state == "closed", Breaker: state, KeyFrom: s.keyFrom, TTL: s.ttl.String(),
		QueueDepth: s.QueueDepth(), Drops: s.drops.Load()}
	if s.ttl <= 0 {
		st.TTL = "forever"
	}
	s.b.status(&st)
	return st
}
