package zfile

import "sync"

// cacheShards spreads the cache over independently locked shards so that
// concurrent readers of different blocks rarely contend.
const cacheShards = 16

// blockCache is a bounded LRU of decoded blocks, keyed by block index.
// Data is copied in and out under the shard lock, so eviction can recycle
// buffers without a reader still holding them.
type blockCache struct {
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu    sync.Mutex
	cap   int
	items map[int64]*cacheEntry
	head  cacheEntry // sentinel of the LRU ring; head.next is the newest
	bs    int
}

type cacheEntry struct {
	key        int64
	data       []byte
	prev, next *cacheEntry
}

// newBlockCache returns a cache of about capBlocks blocks of bs bytes.
func newBlockCache(capBlocks, bs int) *blockCache {
	c := &blockCache{}
	per := max(capBlocks/cacheShards, 1)
	for i := range c.shards {
		s := &c.shards[i]
		s.cap = per
		s.bs = bs
		s.items = make(map[int64]*cacheEntry, per)
		s.head.next, s.head.prev = &s.head, &s.head
	}
	return c
}

func (c *blockCache) shard(key int64) *cacheShard { return &c.shards[uint64(key)%cacheShards] }

// copyOut copies the cached block key from byte from into dst and reports
// whether the block was cached.
func (c *blockCache) copyOut(key int64, dst []byte, from int) bool {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.items[key]
	if !ok {
		return false
	}
	copy(dst, e.data[from:])
	s.unlink(e)
	s.pushFront(e)
	return true
}

// add stores a copy of the decoded block key.
func (c *blockCache) add(key int64, data []byte) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.items[key]; ok {
		return
	}
	var e *cacheEntry
	if len(s.items) >= s.cap {
		e = s.head.prev
		s.unlink(e)
		delete(s.items, e.key)
	} else {
		e = &cacheEntry{data: make([]byte, s.bs)}
	}
	e.key = key
	e.data = e.data[:cap(e.data)][:len(data)]
	copy(e.data, data)
	s.items[key] = e
	s.pushFront(e)
}

// reset drops every entry.
func (c *blockCache) reset() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.items)
		s.head.next, s.head.prev = &s.head, &s.head
		s.mu.Unlock()
	}
}

func (s *cacheShard) unlink(e *cacheEntry) {
	e.prev.next = e.next
	e.next.prev = e.prev
}

func (s *cacheShard) pushFront(e *cacheEntry) {
	e.next = s.head.next
	e.prev = &s.head
	s.head.next.prev = e
	s.head.next = e
}
