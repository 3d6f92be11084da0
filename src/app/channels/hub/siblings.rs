//! Owns what the hub does with the messages of the other processes that share its channels
//! (sibling processes under `server.processes > 1`, cluster members under `[cluster]`): their
//! events delivered here, their subscriber counts and presence merged into this view, their
//! restarts and (in a cluster) their silence, and what this process tells them in turn
//! (changed counts, figures, its own state).

use super::{AppIdx, Channel, Hub, Key, Member, lock};
use crate::app::channels::bus::Msg;
use crate::app::channels::pusher;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Hub {
    /// Applies what sibling process `from` said.
    pub fn on_bus(&self, from: u16, msgs: Vec<Msg>) {
        self.bus_in.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        for m in msgs {
            self.apply(from, m);
        }
    }

    /// Applies what cluster member `from` published. The bus brings this member's own
    /// messages back too: of them, only its events matter (positioned by Redis, they are
    /// delivered here now, in the channel's order); its other messages are about itself.
    /// Figures are per process in a cluster: the others' are not added to this `/metrics`.
    pub fn on_cluster(&self, from: u16, msgs: Vec<Msg>) {
        self.bus_in.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        let me = self.link().map(|l| l.me);
        if Some(from) == me {
            for m in msgs {
                if matches!(m, Msg::Event { pos: Some(_), .. }) {
                    self.sequence_here(m);
                }
            }
            return;
        }
        lock(&self.heard).insert(from, Instant::now());
        for m in msgs {
            if !matches!(m, Msg::Stats { .. } | Msg::Bus { .. } | Msg::Acked { .. }) {
                self.apply(from, m);
            }
        }
    }

    /// Forgets the cluster members not heard from for `silence` (killed, cut off from Redis,
    /// or this member is): their subscribers and presence members leave.
    pub fn forget_silent(&self, silence: Duration) {
        let gone: Vec<u16> = {
            let mut heard = lock(&self.heard);
            let gone = heard
                .iter()
                .filter(|(_, at)| at.elapsed() >= silence)
                .map(|(m, _)| *m)
                .collect::<Vec<_>>();
            for m in &gone {
                heard.remove(m);
            }
            gone
        };
        for m in gone {
            crate::log::info!("cluster: member {m} went silent; its members and subscribers leave");
            self.forget(m);
        }
    }

    fn apply(&self, from: u16, m: Msg) {
        match m {
            Msg::Hello => self.sibling_restarted(from),
            Msg::Subs {
                app,
                channel,
                count,
            } => self.remote_subs(from, app, channel, count),
            Msg::Present {
                app,
                channel,
                user,
                info,
            } => self.remote_presence(from, app, channel, &user, Some(&info)),
            Msg::Absent { app, channel, user } => {
                self.remote_presence(from, app, channel, &user, None)
            }
            m @ Msg::Event { .. } => self.sequence_here(m),
            Msg::Acked { id } => self.acked_by_id(id),
            Msg::Bus {
                inbound,
                outbound,
                errors,
            } => {
                lock(&self.sibling_bus).insert(from, [inbound, outbound, errors]);
            }
            Msg::Stats { app, values } => {
                lock(&self.sibling_stats)
                    .entry(from)
                    .or_default()
                    .insert(app, values);
            }
            Msg::Alive => {}
        }
    }

    fn remote_subs(&self, from: u16, app: AppIdx, channel: Arc<str>, count: u64) {
        if usize::from(app) >= self.apps.len() {
            return;
        }
        let key = (app, channel);
        let mut shard = self.shard(app, &key.1);
        let ch = shard.entry(key.clone()).or_insert_with(Channel::new);
        let before = ch.total();
        if count == 0 {
            ch.remote.remove(&from);
        } else {
            ch.remote.insert(from, count);
        }
        let after = ch.total();
        let occupied = &self.stats[usize::from(app)].occupied_channels;
        match (before, after) {
            (0, 1..) => occupied.fetch_add(1, Ordering::Relaxed),
            (1.., 0) => occupied.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        if ch.vacant() {
            shard.remove(&key);
        }
    }

    /// `info` Some: the user is present on `from`; None: absent.
    fn remote_presence(
        &self,
        from: u16,
        app: AppIdx,
        channel: Arc<str>,
        user: &str,
        info: Option<&str>,
    ) {
        if usize::from(app) >= self.apps.len() {
            return;
        }
        let key = (app, channel);
        let mut shard = self.shard(app, &key.1);
        let mut woken = Vec::new();
        let ch = shard.entry(key.clone()).or_insert_with(Channel::new);
        match (info, ch.members.get_mut(user)) {
            (Some(_), Some(m)) => {
                if !m.remote.contains(&from) {
                    m.remote.push(from);
                }
            }
            (Some(info), None) => {
                ch.members.insert(
                    user.to_string(),
                    Member {
                        local: 0,
                        remote: vec![from],
                        info: info.into(),
                    },
                );
                self.stats[usize::from(app)]
                    .presence_members
                    .fetch_add(1, Ordering::Relaxed);
                let frame = pusher::frame(&pusher::member_added(&key.1, user, info));
                self.post(&mut shard, &key, frame, None, None, &mut woken);
            }
            (None, Some(m)) => {
                m.remote.retain(|&p| p != from);
                if !m.present() {
                    self.remove_member(&mut shard, &key, user, &mut woken);
                }
            }
            (None, None) => {}
        }
        if shard.get(&key).is_some_and(Channel::vacant) {
            shard.remove(&key);
        }
        drop(shard);
        self.wake(&woken, usize::MAX);
    }

    /// Sibling `from` started afresh (or a cluster member rejoined, and sends its state
    /// next): what it had is gone, and it is told what this process has.
    fn sibling_restarted(&self, from: u16) {
        self.forget(from);
        if let Some(l) = self.link() {
            for m in self.own_state() {
                l.send_to(from, m);
            }
        }
    }

    /// This process's subscriber counts and presence members, as the others learn them.
    pub fn own_state(&self) -> Vec<Msg> {
        let mut state = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (key, ch) in shard.iter() {
                for (user, m) in ch.members.iter() {
                    if m.local > 0 {
                        state.push(Msg::Present {
                            app: key.0,
                            channel: Arc::clone(&key.1),
                            user: user.clone(),
                            info: m.info.to_string(),
                        });
                    }
                }
                if ch.subscribers > 0 {
                    state.push(Msg::Subs {
                        app: key.0,
                        channel: Arc::clone(&key.1),
                        count: ch.subscribers,
                    });
                }
            }
        }
        state
    }

    /// What `from` had is gone: its subscribers leave the counts, and its presence members
    /// leave where it was their last process.
    fn forget(&self, from: u16) {
        lock(&self.sibling_stats).remove(&from);
        lock(&self.sibling_bus).remove(&from);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let keys: Vec<Key> = shard.keys().cloned().collect();
            for key in keys {
                let mut woken = Vec::new();
                let mut gone = Vec::new();
                if let Some(ch) = shard.get_mut(&key) {
                    if ch.remote.remove(&from).is_some() && ch.total() == 0 {
                        self.stats[usize::from(key.0)]
                            .occupied_channels
                            .fetch_sub(1, Ordering::Relaxed);
                    }
                    for (user, m) in ch.members.iter_mut() {
                        let had = m.remote.len();
                        m.remote.retain(|&p| p != from);
                        if had != m.remote.len() && !m.present() {
                            gone.push(user.clone());
                        }
                    }
                }
                for user in gone {
                    self.remove_member(&mut shard, &key, &user, &mut woken);
                }
                if shard.get(&key).is_some_and(Channel::vacant) {
                    shard.remove(&key);
                }
                self.wake(&woken, usize::MAX);
            }
        }
    }

    /// This process's figures for every app and for the bus, for the siblings' `/metrics`.
    pub fn stats_messages(&self) -> Vec<Msg> {
        let mut msgs: Vec<Msg> = self
            .stats
            .iter()
            .enumerate()
            .map(|(i, s)| Msg::Stats {
                app: i as AppIdx,
                values: s.snapshot().to_summed(),
            })
            .collect();
        msgs.push(Msg::Bus {
            inbound: self.bus_in.load(Ordering::Relaxed),
            outbound: self.bus_out.load(Ordering::Relaxed),
            errors: self.bus_errors.load(Ordering::Relaxed),
        });
        msgs
    }

    /// The current local subscriber counts of channels that changed since the last call, for
    /// the siblings (sent in batches rather than on every subscribe).
    pub fn take_changed_counts(&self) -> Vec<Msg> {
        let keys: Vec<Key> = lock(&self.dirty).drain().collect();
        keys.into_iter()
            .map(|(app, channel)| {
                let count = self
                    .shard(app, &channel)
                    .get(&(app, Arc::clone(&channel)))
                    .map_or(0, |c| c.subscribers);
                Msg::Subs {
                    app,
                    channel,
                    count,
                }
            })
            .collect()
    }
}
