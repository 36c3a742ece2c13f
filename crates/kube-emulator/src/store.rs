//! The object store: objects keyed by group/resource/namespace/name, one global
//! resourceVersion counter (like etcd's revision), and the event history watches resume from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// How many past events a watch can resume across before it gets `410 Gone`.
const HISTORY_LIMIT: usize = 50_000;

/// Identifies a stored object. The version is not part of the key: as in the real apiserver,
/// one object is visible through every served version of its resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// API group, `""` for core.
    pub group: String,
    /// Plural resource, e.g. `virtualservices`.
    pub resource: String,
    /// Namespace, `""` for cluster-scoped objects.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as recorded for watches.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (before it, for deletes, with the deletion's RV).
    pub object: Value,
}

/// Objects, the revision counter and the history.
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Event>>,
    /// Events with `rv > floor` are all in `history`; older ones were compacted away.
    floor: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Store {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(8192);
        Store { rv: 1000, objects: BTreeMap::new(), history: VecDeque::new(), floor: 1000, tx }
    }
}

impl Store {
    /// The latest resourceVersion handed out.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The stored object, if any.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// All objects of a resource, optionally in one namespace, ordered by namespace and name.
    pub fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|(k, _)| {
                k.group == group && k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v)
            .collect()
    }

    /// Keys of a resource's objects, optionally in one namespace.
    pub fn keys_of(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Key> {
        self.objects
            .keys()
            .filter(|k| {
                k.group == group && k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .cloned()
            .collect()
    }

    /// Keys of every object in a namespace.
    pub fn keys_in_namespace(&self, namespace: &str) -> Vec<Key> {
        self.objects.keys().filter(|k| k.namespace == namespace).cloned().collect()
    }

    /// Stores `object` under `key`, stamping a fresh resourceVersion; returns the stored copy.
    pub fn put(&mut self, key: Key, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let kind = if self.objects.contains_key(&key) { EventType::Modified } else { EventType::Added };
        self.objects.insert(key.clone(), object.clone());
        self.record(kind, key, object.clone());
        object
    }

    /// Removes an object; the returned copy carries the deletion's resourceVersion.
    pub fn delete(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(EventType::Deleted, key.clone(), object.clone());
        Some(object)
    }

    fn record(&mut self, kind: EventType, key: Key, object: Value) {
        let event = Arc::new(Event { rv: self.rv, kind, key, object });
        self.history.push_back(event.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// Forgets the history up to now, so watches resuming from an older version get 410,
    /// as after an etcd compaction.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// Events after `rv`, or `None` if they were compacted away.
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.floor {
            return None;
        }
        Some(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// A receiver for events from now on (call while holding the lock to avoid gaps).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
