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
//! t=1 last=0/0 → Id(1)`, `Timeout(Id(0), Election)`).

use crate::actors::{ModelMsg, ModelTimer};
use crate::{RaftAction, RaftModel, RaftState};
use stateright::actor::{ActorModelAction, Id};
use stateright::{Model, Path, Property};

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

    /// A server by its number, a client by its client id (actor ids of
    /// clients follow the servers'; client ids start at 1).
    fn actor(&self, id: Id) -> String {
        let index = usize::from(id);
        let servers = usize::from(self.model.cfg.servers);
        if index < servers {
            index.to_string()
        } else {
            format!("client {}", index - servers + 1)
        }
    }

    fn message(&self, src: Id, dst: Id, msg: &ModelMsg) -> String {
        match msg {
            // The envelope names its sender and receiver already.
            ModelMsg::Raft(envelope) => envelope.to_string(),
            ModelMsg::Request(command) => {
                format!("{}->{} #{} {}", self.actor(src), self.actor(dst), command.seq, command.op)
            }
            ModelMsg::Response(reply) => {
                format!("{}->{} #{} {:?}", self.actor(src), self.actor(dst), reply.seq, reply.result)
            }
        }
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
    type State = RaftState;
    type Action = RaftAction;

    fn init_states(&self) -> Vec<RaftState> {
        self.model.init_states()
    }

    fn actions(&self, state: &RaftState, actions: &mut Vec<RaftAction>) {
        self.model.actions(state, actions)
    }

    fn next_state(&self, state: &RaftState, action: RaftAction) -> Option<RaftState> {
        self.model.next_state(state, action)
    }

    fn format_action(&self, action: &RaftAction) -> String {
        self.label(action)
    }

    fn format_step(&self, state: &RaftState, action: RaftAction) -> Option<String> {
        self.model.format_step(state, action)
    }

    fn as_svg(&self, path: Path<RaftState, RaftAction>) -> Option<String> {
        self.model.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.properties
            .iter()
            .zip(CONDITIONS)
            .map(|(p, condition)| Property { expectation: p.expectation.clone(), name: p.name, condition })
            .collect()
    }

    fn within_boundary(&self, state: &RaftState) -> bool {
        Model::within_boundary(&self.model, state)
    }
}

/// The model's `I`th property, as a condition on the [`Explorer`].
fn condition<const I: usize>(explorer: &Explorer, state: &RaftState) -> bool {
    (explorer.properties[I].condition)(&explorer.model, state)
}

/// One condition per property the Explorer can show (the model has 16).
const CONDITIONS: [fn(&Explorer, &RaftState) -> bool; 24] = [
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
        let leader = path.last_state();
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
                assert_eq!((o.condition)(&explorer, state), (t.condition)(&explorer.model, state), "{}", o.name);
            }
        }
        // Not vacuous: the leader state tells "leader elected" apart.
        let elected = ours.iter().find(|p| p.name == "leader elected").unwrap();
        assert!(!(elected.condition)(&explorer, init) && (elected.condition)(&explorer, leader));
    }
}
