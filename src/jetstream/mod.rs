//! Many children through NATS JetStream (feature `jetstream`): the hub publishes each
//! change once to a stream, and every child applies it exactly once with a
//! [`Subscriber`], under rules of its own.
//!
//! A hub that feeds a handful of databases on its network ships to each directly, as
//! [`Destination`](crate::Destination)s. A hub with hundreds of children, behind
//! firewalls, some offline for a day, added and removed without touching the hub, ships
//! once to a stream instead: the hub's outbox is read once whatever the number of
//! children, and each child keeps its own place in the stream.
//!
//! - [`Publisher`]: the hub's destination that publishes to the stream.
//! - [`Subscriber`]: the runner a child starts next to its application.
//! - [`subscribers`]: where each child stands, from the stream alone.
//!
//! It needs nats-server 2.9 or later with JetStream on: the client asks nothing that 2.9
//! lacks (streams with `max_msgs_per_subject`, message de-duplication by `Nats-Msg-Id`,
//! durable pull consumers, and getting a subject's last message).

mod converge;
mod follow;
mod message;
mod names;
mod publisher;
mod state;
mod subscriber;
mod subscribers;

pub use publisher::{Publisher, PublisherBuilder};
pub use subscriber::{Subscriber, SubscriberBuilder};
pub use subscribers::{SubscriberInfo, subscribers};
