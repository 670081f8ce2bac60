//! A bounded cache of GET responses for the gateway, sans-IO (time comes in as `Instant`s).
//!
//! An entry is kept while it is fresh (the Max-Age the HTTP server's Cache-Control gave) and,
//! when it has an entity tag, after that too, to be revalidated: the next request for it asks
//! the HTTP server with If-None-Match, and a 304 makes the stored body fresh again without
//! sending it twice. Entries are keyed by target URL, the client's Accept and the client's
//! identity when the HTTP server is told it (answers may differ per client then). The cache
//! holds at most `max_bytes` (bodies and keys), least recently used first out; an entry
//! larger than `max_entry_bytes` is never stored.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tern_proto::{Message, OptionNumber};

/// What a cached response is found by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The target URL.
    pub target: String,
    /// The client's Accept option, if any.
    pub accept: Option<u32>,
    /// The client's identity, when it is passed to the HTTP server.
    pub identity: Option<String>,
}

impl CacheKey {
    /// What the key costs: it is held twice (the map and the use order), plus bookkeeping.
    fn bytes(&self) -> usize {
        2 * (self.target.len() + self.identity.as_ref().map_or(0, String::len)) + 128
    }
}

/// What the cache has for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A fresh response, its Max-Age set to what is left of its freshness.
    Fresh(Message),
    /// A stale response with this HTTP entity tag: ask with If-None-Match, and answer a 304
    /// with the response.
    Stale(String, Message),
    /// Nothing.
    Miss,
}

#[derive(Debug)]
struct Entry {
    response: Message,
    http_etag: Option<String>,
    fresh_until: Instant,
    last_used: u64,
    bytes: usize,
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from a fresh entry.
    pub hits: u64,
    /// Stale entries made fresh by a 304.
    pub revalidated: u64,
    /// Requests with nothing usable cached.
    pub misses: u64,
    /// Entries dropped to stay within the byte cap.
    pub evicted: u64,
}

/// The gateway's response cache.
#[derive(Debug)]
pub struct ResponseCache {
    entries: HashMap<CacheKey, Entry>,
    /// Keys by last use, oldest first.
    order: BTreeMap<u64, CacheKey>,
    max_bytes: usize,
    max_entry_bytes: usize,
    bytes: usize,
    clock: u64,
    stats: CacheStats,
}

impl ResponseCache {
    /// A cache of at most `max_bytes`, storing no entry over `max_entry_bytes`.
    pub fn new(max_bytes: usize, max_entry_bytes: usize) -> Self {
        ResponseCache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            max_bytes,
            max_entry_bytes,
            bytes: 0,
            clock: 0,
            stats: CacheStats::default(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Looks a request up.
    pub fn lookup(&mut self, key: &CacheKey, now: Instant) -> Lookup {
        self.clock += 1;
        let clock = self.clock;
        let Some(entry) = self.entries.get_mut(key) else {
            self.stats.misses += 1;
            return Lookup::Miss;
        };
        self.order.remove(&entry.last_used);
        self.order.insert(clock, key.clone());
        entry.last_used = clock;
        if now < entry.fresh_until {
            self.stats.hits += 1;
            return Lookup::Fresh(with_max_age(&entry.response, entry.fresh_until - now));
        }
        match &entry.http_etag {
            Some(tag) => Lookup::Stale(tag.clone(), entry.response.clone()),
            None => {
                self.stats.misses += 1;
                self.remove(key);
                Lookup::Miss
            }
        }
    }

    /// Stores a response (2.05 only) fresh for `max_age` seconds; one with neither freshness
    /// nor an entity tag is not worth keeping and drops what was stored under the key.
    pub fn store(
        &mut self,
        key: CacheKey,
        response: &Message,
        http_etag: Option<String>,
        max_age: u32,
        now: Instant,
    ) {
        self.remove(&key);
        if response.code != tern_proto::Code::CONTENT || (max_age == 0 && http_etag.is_none()) {
            return;
        }
        let bytes = key.bytes()
            + response.payload.len()
            + response
                .options
                .iter()
                .map(|o| o.value.len() + 4)
                .sum::<usize>()
            + http_etag.as_ref().map_or(0, String::len);
        if bytes > self.max_entry_bytes || bytes > self.max_bytes {
            return;
        }
        while self.bytes + bytes > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= entry.bytes;
            }
            self.stats.evicted += 1;
        }
        self.clock += 1;
        self.bytes += bytes;
        self.order.insert(self.clock, key.clone());
        self.entries.insert(
            key,
            Entry {
                response: response.clone(),
                http_etag,
                fresh_until: now + Duration::from_secs(u64::from(max_age)),
                last_used: self.clock,
                bytes,
            },
        );
    }

    /// A 304 came for a stale entry: fresh again for `max_age` seconds; its response.
    pub fn revalidated(&mut self, key: &CacheKey, max_age: u32, now: Instant) -> Option<Message> {
        let entry = self.entries.get_mut(key)?;
        entry.fresh_until = now + Duration::from_secs(u64::from(max_age));
        self.stats.revalidated += 1;
        Some(with_max_age(
            &entry.response,
            Duration::from_secs(u64::from(max_age)),
        ))
    }

    /// Drops what is stored under `key` (a response that may not be stored replaced it).
    pub fn forget(&mut self, key: &CacheKey) {
        self.remove(key);
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.bytes;
            self.order.remove(&entry.last_used);
        }
    }
}

/// The response with Max-Age set to what is left (whole seconds, rounded down).
pub(crate) fn with_max_age(response: &Message, left: Duration) -> Message {
    let mut response = response.clone();
    let seconds = left.as_secs().min(u64::from(u32::MAX)) as u32;
    response.options.set_uint(OptionNumber::MAX_AGE, seconds);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{Code, MessageType};

    fn key(target: &str) -> CacheKey {
        CacheKey {
            target: target.into(),
            accept: None,
            identity: None,
        }
    }

    fn content(body: &[u8]) -> Message {
        let mut m = Message::new(MessageType::Ack, Code::CONTENT);
        m.payload = body.to_vec();
        m
    }

    #[test]
    fn fresh_then_stale_then_revalidated() {
        let t0 = Instant::now();
        let mut cache = ResponseCache::new(1 << 20, 1 << 16);
        assert_eq!(cache.lookup(&key("a"), t0), Lookup::Miss);
        cache.store(key("a"), &content(b"one"), Some("\"v1\"".into()), 10, t0);
        let Lookup::Fresh(m) = cache.lookup(&key("a"), t0 + Duration::from_secs(4)) else {
            panic!("not fresh");
        };
        assert_eq!(m.payload, b"one");
        assert_eq!(m.options.get_uint(OptionNumber::MAX_AGE), Some(6));
        let later = t0 + Duration::from_secs(11);
        let Lookup::Stale(tag, stale) = cache.lookup(&key("a"), later) else {
            panic!("not stale");
        };
        assert_eq!(
            (tag.as_str(), stale.payload.as_slice()),
            ("\"v1\"", &b"one"[..])
        );
        let m = cache.revalidated(&key("a"), 5, later).unwrap();
        assert_eq!(m.payload, b"one");
        assert!(matches!(cache.lookup(&key("a"), later), Lookup::Fresh(_)));
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                revalidated: 1,
                misses: 1,
                evicted: 0
            }
        );
    }

    #[test]
    fn what_is_not_kept() {
        let t0 = Instant::now();
        let mut cache = ResponseCache::new(1 << 20, 100);
        // No freshness and no tag; an error; too large for one entry.
        cache.store(key("a"), &content(b"x"), None, 0, t0);
        let mut not_found = content(b"");
        not_found.code = Code::NOT_FOUND;
        cache.store(key("b"), &not_found, None, 60, t0);
        cache.store(key("c"), &content(&[0; 200]), None, 60, t0);
        assert!(cache.is_empty());
        // Stale without a tag: gone at the next lookup.
        cache.store(key("d"), &content(b"x"), None, 1, t0);
        assert_eq!(
            cache.lookup(&key("d"), t0 + Duration::from_secs(2)),
            Lookup::Miss
        );
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
        // Accept and identity are part of the key.
        cache.store(key("e"), &content(b"x"), None, 60, t0);
        let other = CacheKey {
            accept: Some(50),
            ..key("e")
        };
        assert_eq!(cache.lookup(&other, t0), Lookup::Miss);
    }

    #[test]
    fn the_byte_cap_evicts_the_least_recently_used() {
        let t0 = Instant::now();
        let mut cache = ResponseCache::new(1000, 1000);
        for name in ["a", "b", "c"] {
            cache.store(key(name), &content(&[0; 200]), None, 60, t0);
        }
        // Use "a", so "b" is the least recently used when "d" needs room.
        assert!(matches!(cache.lookup(&key("a"), t0), Lookup::Fresh(_)));
        cache.store(key("d"), &content(&[0; 200]), None, 60, t0);
        assert!(cache.bytes() <= 1000);
        assert_eq!(cache.lookup(&key("b"), t0), Lookup::Miss);
        assert!(matches!(cache.lookup(&key("a"), t0), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup(&key("d"), t0), Lookup::Fresh(_)));
        assert_eq!(cache.stats().evicted, 1);
    }
}
