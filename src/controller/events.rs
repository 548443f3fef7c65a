//! Kubernetes events (`events.k8s.io/v1`), created directly instead of through kube's `Recorder`:
//! the Recorder keeps every event it published for six minutes to aggregate repeats, and scans that
//! memory on each publish, which at thousands of objects costs tens of MiB and time linear in the
//! fleet per event. This operator publishes an event only when it changed something or a condition
//! newly failed, so there are no repeats to aggregate.

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};

use crate::remote::truncate;

/// The API server refuses notes longer than this many bytes.
const MAX_NOTE_BYTES: usize = 1024;

/// Event writes in flight at once. All API requests share one HTTP/2 connection: a burst of events
/// (four per new object) must wait in the queue, not ahead of the status writes that make objects
/// Ready. A queued entry is a few hundred bytes; a task per entry would hold a whole request future.
const EVENTS_IN_FLIGHT: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// One event to publish about an object.
#[derive(Clone, Debug)]
pub struct Note {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

/// Queues events for one background task to write: events are best-effort, and a reconcile
/// worker should not wait for them.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::UnboundedSender<(ObjectReference, Vec<Note>)>,
}

impl Publisher {
    /// Starts the writer task; it ends when every `Publisher` clone is dropped.
    pub fn start(client: Client, controller: &str, instance: &str) -> Self {
        let (queue, queued) = mpsc::unbounded();
        let writer = Writer { client, controller: controller.to_owned(), instance: instance.to_owned() };
        tokio::spawn(queued.for_each_concurrent(EVENTS_IN_FLIGHT, move |(regarding, notes)| {
            let writer = writer.clone();
            async move {
                // One object's notes in order.
                for note in &notes {
                    if let Err(e) = writer.write(&regarding, note).await {
                        tracing::warn!(error = %e, reason = note.reason, "could not publish event");
                    }
                }
            }
        }));
        Self { queue }
    }

    /// Queues `notes` about `regarding`, to be written in order.
    pub fn publish(&self, regarding: ObjectReference, notes: Vec<Note>) {
        if notes.is_empty() {
            return;
        }
        if self.queue.unbounded_send((regarding, notes)).is_err() {
            tracing::warn!("event writer stopped; event dropped");
        }
    }
}

#[derive(Clone)]
struct Writer {
    client: Client,
    controller: String,
    instance: String,
}

impl Writer {
    async fn write(&self, regarding: &ObjectReference, note: &Note) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let ns = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(format!("{:?}", note.type_)),
            reason: Some(note.reason.clone()),
            action: Some(note.reason.clone()),
            note: Some(truncate(&note.note, MAX_NOTE_BYTES)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &ns).create(&PostParams::default(), &event).await.map(drop)
    }
}
