//! The actors: each server wraps the production [`KvServer`] (and so the
//! real Raft node and KV state machine); each client wraps the production
//! [`Clerk`] with a short script of operations.

use raftkv::clerk::{Clerk, ClerkAction};
use raftkv::kv::{Command, KvServer, Op, Response, ServerConfig, ServerInput, ServerOutput};
use raftkv::raft::{DurableState, Entry, Envelope, HardState, NodeId, Role};
use stateright::actor::{model_timeout, Actor, Id, Out};
use std::borrow::Cow;
use std::sync::Arc;

/// Everything that travels between actors.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelMsg {
    Raft(Envelope<Command>),
    Request(Command),
    Response(Response),
}

/// Timers have no duration in the checker: any set timer may fire at any
/// moment, which covers every interleaving of timeouts and messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelTimer {
    /// A follower's or candidate's election timeout elapses.
    Election,
    /// A leader's heartbeat interval elapses.
    Heartbeat,
    /// A client's request timed out: retry elsewhere.
    Retry,
}

/// Exactly what a server makes durable: its hard state and log. A crash
/// keeps only this; a recovered server restarts from it. (For a client, its
/// whole state, so that a client "crash" is only a pause.)
///
/// Behind an `Arc`: stateright clones every storage with every state it
/// queues, and most steps leave it unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Durable {
    Server(Arc<DurableServer>),
    Client(Arc<ClientState>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DurableServer {
    pub hard: HardState,
    pub log: Vec<Entry<Command>>,
}

// Stateright keeps each actor state behind an `Arc`; the size gap between a
// server and a client costs nothing there.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActorState {
    /// The replica, plus what it has made durable (shared with its
    /// storage; kept here because an actor reads its storage only when it
    /// starts).
    Server {
        server: KvServer,
        durable: Arc<DurableServer>,
    },
    Client(ClientState),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    pub clerk: Clerk,
    /// Index of the next script operation to start.
    pub next: usize,
}

#[derive(Clone, Debug)]
pub enum ModelActor {
    Server { config: ServerConfig, servers: u8 },
    Client { client: u64, servers: u8, script: Vec<Op> },
}

impl Actor for ModelActor {
    type Msg = ModelMsg;
    type Timer = ModelTimer;
    type State = ActorState;
    type Storage = Durable;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<Durable>, o: &mut Out<Self>) -> ActorState {
        match self {
            ModelActor::Server { config, .. } => {
                let durable = match storage {
                    Some(Durable::Server(durable)) => durable.clone(),
                    _ => Arc::default(),
                };
                o.set_timer(ModelTimer::Election, model_timeout());
                o.set_timer(ModelTimer::Heartbeat, model_timeout());
                let state = DurableState { hard: durable.hard, log: durable.log.clone(), ..DurableState::default() };
                let server = KvServer::restart(config.clone(), state).expect("no snapshots in the models yet");
                ActorState::Server { server, durable }
            }
            ModelActor::Client { client, servers, .. } => {
                if let Some(Durable::Client(state)) = storage {
                    if state.clerk.pending().is_some() {
                        o.set_timer(ModelTimer::Retry, model_timeout());
                    }
                    return ActorState::Client((**state).clone());
                }
                let mut state = ClientState { clerk: Clerk::new(*client, *servers, 0), next: 0 };
                self.start_next(&mut state, o);
                ActorState::Client(state)
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<ActorState>, src: Id, msg: ModelMsg, o: &mut Out<Self>) {
        match (self, msg) {
            (ModelActor::Server { servers, .. }, ModelMsg::Raft(envelope)) => {
                server_step(*servers, state, ServerInput::Peer(envelope), o, |_| {})
            }
            (ModelActor::Server { servers, .. }, ModelMsg::Request(request)) => {
                server_step(*servers, state, ServerInput::Client(request), o, |_| {})
            }
            (ModelActor::Client { .. }, ModelMsg::Response(response)) => {
                let ActorState::Client(client) = state.as_ref() else { return };
                let mut client = client.clone();
                let action = client.clerk.on_response(usize::from(src) as NodeId, response);
                if action.is_some() {
                    self.carry_out(&mut client, action, o);
                    *state.to_mut() = ActorState::Client(client);
                }
            }
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<ActorState>, timer: &ModelTimer, o: &mut Out<Self>) {
        match (self, timer) {
            (ModelActor::Server { servers, .. }, ModelTimer::Election) if !is_leader(state) => {
                // Tick until the timeout elapses: the node starts a (pre-)election.
                let before = role(state);
                server_ticks(*servers, state, o, move |s| s.node().role() != before);
                o.set_timer(ModelTimer::Election, model_timeout());
            }
            (ModelActor::Server { servers, .. }, ModelTimer::Heartbeat) if is_leader(state) => {
                // Tick until the leader sends its heartbeats (or steps down).
                server_ticks(*servers, state, o, |s| !s.node().is_leader());
                o.set_timer(ModelTimer::Heartbeat, model_timeout());
            }
            (ModelActor::Client { .. }, ModelTimer::Retry) => {
                let ActorState::Client(client) = state.as_ref() else { return };
                let mut client = client.clone();
                let attempt = client.clerk.attempt();
                let action = client.clerk.on_timeout(attempt);
                self.carry_out(&mut client, action, o);
                *state.to_mut() = ActorState::Client(client);
            }
            _ => {}
        }
    }
}

impl ModelActor {
    fn start_next(&self, state: &mut ClientState, o: &mut Out<Self>) {
        let ModelActor::Client { script, .. } = self else { return };
        if let Some(op) = script.get(state.next) {
            state.next += 1;
            let action = state.clerk.start(op.clone());
            self.carry_out(state, Some(action), o);
        }
    }

    fn carry_out(&self, state: &mut ClientState, action: Option<ClerkAction>, o: &mut Out<Self>) {
        match action {
            Some(ClerkAction::Send { to, request, .. }) => {
                o.send(Id::from(usize::from(to)), ModelMsg::Request(request));
                o.set_timer(ModelTimer::Retry, model_timeout());
            }
            Some(ClerkAction::Done { .. }) => {
                o.cancel_timer(ModelTimer::Retry);
                self.start_next(state, o);
            }
            None => {}
        }
        o.save(Durable::Client(Arc::new(state.clone())));
    }
}

fn is_leader(state: &ActorState) -> bool {
    matches!(state, ActorState::Server { server, .. } if server.node().is_leader())
}

fn role(state: &ActorState) -> Role {
    match state {
        ActorState::Server { server, .. } => server.node().role(),
        ActorState::Client(_) => Role::Follower,
    }
}

/// Feeds ticks until `done` holds for the server (at most a generous bound).
fn server_ticks(servers: u8, state: &mut Cow<ActorState>, o: &mut Out<ModelActor>, done: impl Fn(&KvServer) -> bool) {
    const MAX_TICKS: usize = 1_000;
    for _ in 0..MAX_TICKS {
        let mut sent = false;
        server_step(servers, state, ServerInput::Tick, o, |out| sent = !out.messages.is_empty());
        let ActorState::Server { server, .. } = state.as_ref() else { return };
        if sent || done(server) {
            return;
        }
    }
}

/// Steps the real replica and carries out its output under the persistence
/// contract, with a disk that is fast and reliable: a batch is written and
/// reported durable within the same action (a crash comes between actions,
/// so it loses nothing the node handed out; the simulator and the `node`
/// fuzz target play the slow and late disks). Then sends what it asks.
fn server_step(
    servers: u8,
    state: &mut Cow<ActorState>,
    input: ServerInput,
    o: &mut Out<ModelActor>,
    mut observe: impl FnMut(&ServerOutput),
) {
    let ActorState::Server { server, durable } = state.to_mut() else { return };
    let mut out = server.step(input);
    debug_assert!(out.snapshot.is_none(), "the models take no snapshots yet (SnapshotPolicy::NEVER)");
    if let Some(batch) = out.persist.take() {
        let DurableServer { hard, log } = Arc::make_mut(durable);
        if let Some(h) = batch.hard_state {
            *hard = h;
        }
        if let Some(w) = &batch.log {
            log.truncate((w.from.max(1) - 1) as usize);
            log.extend(w.entries.iter().cloned());
        }
        o.save(Durable::Server(durable.clone()));
        let then = server.step(ServerInput::Persisted(batch.number));
        debug_assert!(then.persist.is_none(), "a report of durability changes nothing durable");
        out.messages.extend(then.messages);
        out.responses.extend(then.responses);
        out.applied.extend(then.applied);
    }
    observe(&out);
    for envelope in out.messages {
        let to = Id::from(usize::from(envelope.to));
        o.send(to, ModelMsg::Raft(envelope));
    }
    for response in out.responses {
        let client = Id::from(usize::from(servers) + (response.client - 1) as usize);
        o.send(client, ModelMsg::Response(response));
    }
}
