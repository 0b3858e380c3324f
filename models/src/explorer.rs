//! The model as the Stateright Explorer shows it: the same states, actions
//! and properties (so the Explorer's `/.states/<init>/<action>/…` paths are
//! the model's, see [`crate::schedule::action_indices`]), but each action
//! named in one short line a person can scan down a list of choices:
//!
//! | action | label |
//! |---|---|
//! | a Raft message delivered | `0->1 PreVote t=1 last=0/0` |
//! | a client's request delivered | `client 1->0 #1 Append("k", "1")` |
//! | a server's reply delivered | `0->client 1 #1 Ok("")` |
//! | a timer fires | `0 election timeout`, `0 heartbeat`, `client 1 retries` |
//! | a crash, a recovery | `2 crashes`, `2 recovers` |
//! | a message lost | `lost: 0->1 PreVote t=1 last=0/0` |
//!
//! instead of stateright's `Debug` of the action (`Id(0) → 0->1 PreVote
//! t=1 last=0/0 → Id(1)`, `Timeout(Id(0), Election)`). A whole state (the
//! Explorer's "Complete State?") is each actor's state, then the messages
//! in flight one line each, the timers set, the crashed actors and the
//! history ([`ExplorerState`]), instead of stateright's five lines per
//! message and a line per field of every empty map.

use crate::actors::{ModelMsg, ModelTimer};
use crate::{RaftAction, RaftModel, RaftState};
use stateright::actor::{ActorModelAction, Envelope, Id, Network};
use stateright::{Model, Path, Property};
use std::fmt;

/// A state of the model as the Explorer prints it (the same state: only
/// its `Debug` differs, see the module's comment).
#[derive(Clone, PartialEq, Hash)]
pub struct ExplorerState(pub RaftState);

impl fmt::Debug for ExplorerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = &self.0;
        let servers = crate::server_count(state);
        let name = |i: usize| actor_name(servers, Id::from(i));
        for (i, actor) in state.actor_states.iter().enumerate() {
            let crashed = if state.crashed[i] { " (crashed: this is its state before)" } else { "" };
            writeln!(f, "{}{crashed}: {:#?}", name(i), actor)?;
        }
        let in_flight = in_flight(&state.network, servers);
        writeln!(f, "network: {} in flight{}", in_flight.len(), if in_flight.is_empty() { "" } else { ":" })?;
        for message in &in_flight {
            writeln!(f, "    {message}")?;
        }
        let timers: Vec<String> = state
            .timers_set
            .iter()
            .enumerate()
            .filter(|(_, t)| t.iter().next().is_some())
            .map(|(i, t)| {
                // A hash set: sorted, so the same state always reads the same.
                let mut set: Vec<String> = t.iter().map(|timer| format!("{timer:?}")).collect();
                set.sort();
                format!("{} [{}]", name(i), set.join(", "))
            })
            .collect();
        writeln!(f, "timers: {}", timers.join(", "))?;
        let crashed: Vec<String> = (0..state.crashed.len()).filter(|&i| state.crashed[i]).map(name).collect();
        writeln!(f, "crashed: {}", if crashed.is_empty() { "none".to_owned() } else { crashed.join(", ") })?;
        write!(f, "history: {:#?}", state.history)
    }
}

/// The messages in flight, one label each: on an ordered network channel
/// by channel, oldest first; otherwise sorted, a message sent more than
/// once marked `(×2)`.
fn in_flight(network: &Network<ModelMsg>, servers: usize) -> Vec<String> {
    let label = |e: &Envelope<ModelMsg>| message_label(servers, e.src, e.dst, &e.msg);
    match network {
        Network::Ordered(channels) => channels
            .iter()
            .flat_map(|(&(src, dst), queue)| queue.iter().map(move |msg| message_label(servers, src, dst, msg)))
            .collect(),
        Network::UnorderedNonDuplicating(multiset) => {
            let mut lines: Vec<String> = multiset
                .iter()
                .map(|(e, &count)| if count > 1 { format!("{} (×{count})", label(e)) } else { label(e) })
                .collect();
            lines.sort();
            lines
        }
        Network::UnorderedDuplicating(set, _) => {
            let mut lines: Vec<String> = set.iter().map(label).collect();
            lines.sort();
            lines
        }
    }
}

/// A server by its number, a client by its client id (actor ids of
/// clients follow the servers'; client ids start at 1).
fn actor_name(servers: usize, id: Id) -> String {
    let index = usize::from(id);
    if index < servers {
        index.to_string()
    } else {
        format!("client {}", index - servers + 1)
    }
}

fn message_label(servers: usize, src: Id, dst: Id, msg: &ModelMsg) -> String {
    let name = |id| actor_name(servers, id);
    match msg {
        // The envelope names its sender and receiver already.
        ModelMsg::Raft(envelope) => envelope.to_string(),
        ModelMsg::Request(command) => format!("{}->{} #{} {}", name(src), name(dst), command.seq, command.op),
        ModelMsg::Response(reply) => format!("{}->{} #{} {:?}", name(src), name(dst), reply.seq, reply.result),
    }
}

/// [`RaftModel`] with short action labels, for `raftkv-models explore`.
pub struct Explorer {
    model: RaftModel,
    /// The model's properties, kept once: [`Explorer::properties`] hands
    /// stateright plain `fn` pointers, which cannot capture them.
    properties: Vec<Property<RaftModel>>,
}

impl Explorer {
    pub fn new(model: RaftModel) -> Self {
        let properties = model.properties();
        assert!(
            properties.len() <= CONDITIONS.len(),
            "the model has {} properties but the Explorer can show {}: add conditions to CONDITIONS",
            properties.len(),
            CONDITIONS.len()
        );
        Explorer { model, properties }
    }

    fn servers(&self) -> usize {
        usize::from(self.model.cfg.servers)
    }

    fn actor(&self, id: Id) -> String {
        actor_name(self.servers(), id)
    }

    fn message(&self, src: Id, dst: Id, msg: &ModelMsg) -> String {
        message_label(self.servers(), src, dst, msg)
    }

    /// The one-line label of `action` (the table in the module's comment).
    pub fn label(&self, action: &RaftAction) -> String {
        match action {
            ActorModelAction::Deliver { src, dst, msg } => self.message(*src, *dst, msg),
            ActorModelAction::Drop(envelope) => {
                format!("lost: {}", self.message(envelope.src, envelope.dst, &envelope.msg))
            }
            ActorModelAction::Timeout(id, timer) => {
                let what = match timer {
                    ModelTimer::Election => "election timeout",
                    ModelTimer::Heartbeat => "heartbeat",
                    ModelTimer::Retry => "retries",
                    ModelTimer::Snapshot => "snapshot written",
                    ModelTimer::Reconfigure => "operator reconfigures",
                    ModelTimer::Log => "log batch written",
                };
                format!("{} {what}", self.actor(*id))
            }
            ActorModelAction::Crash(id) => format!("{} crashes", self.actor(*id)),
            ActorModelAction::Recover(id) => format!("{} recovers", self.actor(*id)),
            // The model's actors make no random choices.
            ActorModelAction::SelectRandom { .. } => self.model.format_action(action),
        }
    }
}

impl Model for Explorer {
    type State = ExplorerState;
    type Action = RaftAction;

    fn init_states(&self) -> Vec<ExplorerState> {
        self.model.init_states().into_iter().map(ExplorerState).collect()
    }

    fn actions(&self, state: &ExplorerState, actions: &mut Vec<RaftAction>) {
        self.model.actions(&state.0, actions)
    }

    fn next_state(&self, state: &ExplorerState, action: RaftAction) -> Option<ExplorerState> {
        self.model.next_state(&state.0, action).map(ExplorerState)
    }

    fn format_action(&self, action: &RaftAction) -> String {
        self.label(action)
    }

    fn format_step(&self, state: &ExplorerState, action: RaftAction) -> Option<String> {
        self.model.format_step(&state.0, action)
    }

    fn as_svg(&self, path: Path<ExplorerState, RaftAction>) -> Option<String> {
        let steps = path.into_vec();
        let init = steps.first()?.0 .0.clone();
        let actions: Vec<RaftAction> = steps.into_iter().filter_map(|(_, action)| action).collect();
        self.model.as_svg(Path::from_actions(&self.model, init, &actions)?)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.properties
            .iter()
            .zip(CONDITIONS)
            .map(|(p, condition)| Property { expectation: p.expectation.clone(), name: p.name, condition })
            .collect()
    }

    fn within_boundary(&self, state: &ExplorerState) -> bool {
        Model::within_boundary(&self.model, &state.0)
    }
}

/// The model's `I`th property, as a condition on the [`Explorer`].
fn condition<const I: usize>(explorer: &Explorer, state: &ExplorerState) -> bool {
    (explorer.properties[I].condition)(&explorer.model, &state.0)
}

/// One condition per property the Explorer can show (the model has 16).
const CONDITIONS: [fn(&Explorer, &ExplorerState) -> bool; 24] = [
    condition::<0>,
    condition::<1>,
    condition::<2>,
    condition::<3>,
    condition::<4>,
    condition::<5>,
    condition::<6>,
    condition::<7>,
    condition::<8>,
    condition::<9>,
    condition::<10>,
    condition::<11>,
    condition::<12>,
    condition::<13>,
    condition::<14>,
    condition::<15>,
    condition::<16>,
    condition::<17>,
    condition::<18>,
    condition::<19>,
    condition::<20>,
    condition::<21>,
    condition::<22>,
    condition::<23>,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::replay;
    use crate::{model, ModelConfig};

    /// An election, a client's request refused and its retry: each action
    /// is one short line, and the Explorer's properties are the model's,
    /// judging states alike.
    #[test]
    fn actions_are_short_lines_and_properties_the_models() {
        let explorer = Explorer::new(model(ModelConfig::ci()));
        let path = replay(&explorer.model, "T0 D01 D10 D01 D10").expect("an election");
        let labels: Vec<String> = path.clone().into_actions().iter().map(|a| explorer.label(a)).collect();
        assert_eq!(
            labels,
            [
                "0 election timeout",
                "0->1 PreVote t=1 last=0/0",
                "1->0 PreVoteReply t=1 granted",
                "0->1 Vote t=1 last=0/0",
                "1->0 VoteReply t=1 granted",
            ]
        );
        let mut choices = Vec::new();
        let leader = &ExplorerState(path.last_state().clone());
        explorer.actions(leader, &mut choices);
        let labels: Vec<String> = choices.iter().map(|a| explorer.label(a)).collect();
        assert!(labels.iter().any(|l| l.starts_with("client 1->0 #1 Append(")), "{labels:#?}");
        assert!(labels.contains(&"client 1 retries".to_string()), "{labels:#?}");
        assert!(labels.contains(&"0 heartbeat".to_string()), "{labels:#?}");

        let ours = explorer.properties();
        let theirs = explorer.model.properties();
        assert_eq!(ours.len(), theirs.len());
        let init = &explorer.init_states()[0];
        for (o, t) in ours.iter().zip(&theirs) {
            assert_eq!((o.name, &o.expectation), (t.name, &t.expectation));
            for state in [init, leader] {
                assert_eq!((o.condition)(&explorer, state), (t.condition)(&explorer.model, &state.0), "{}", o.name);
            }
        }
        // Not vacuous: the leader state tells "leader elected" apart.
        let elected = ours.iter().find(|p| p.name == "leader elected").unwrap();
        assert!(!(elected.condition)(&explorer, init) && (elected.condition)(&explorer, leader));
    }

    /// A whole state: the actors, then each message in flight on a line of
    /// its own, the timers, the crashed actors and the history; on an
    /// ordered network too.
    #[test]
    fn a_whole_state_lists_messages_one_per_line() {
        let ordered = Explorer::new(model(ModelConfig::ci_snapshots()));
        let path = replay(&ordered.model, "T0 D01").expect("a pre-vote");
        let text = format!("{:#?}", ExplorerState(path.last_state().clone()));
        assert!(text.contains("network: 3 in flight:\n    0->2 PreVote t=1 last=0/0\n"), "{text}");

        let explorer = Explorer::new(model(ModelConfig::ci()));
        // Server 0 has sent its pre-votes; server 1's grant is in flight.
        let path = replay(&explorer.model, "T0 D01").expect("a pre-vote");
        let text = format!("{:#?}", ExplorerState(path.last_state().clone()));
        for line in [
            "network: 3 in flight:",
            "    0->2 PreVote t=1 last=0/0",
            "    1->0 PreVoteReply t=1 granted",
            "    client 1->0 #1 Append(\"k\", \"1\")",
            "crashed: none",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        assert!(text.contains("0: Server {") && text.contains("client 1: Client("), "{text}");
        assert!(text.contains("timers: 0 [Election, Heartbeat], 1 [Election, Heartbeat]"), "{text}");
        for noise in ["Envelope {", "RandomChoices", "Id("] {
            assert!(!text.contains(noise), "{noise:?} in:\n{text}");
        }
    }
}
