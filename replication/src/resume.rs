//! Resuming a stored flow at a takeover: both saved halves advanced by the flow's latest progress, and
//! the held bytes (policy `replica`) each half must transmit again.
//!
//! The rule that keeps the two halves consistent is the byte-aligned relay's: per direction, the receiving
//! half resumes its receive edge exactly where the sending half's stream ends (what the destination peer
//! acknowledged plus what the standby holds for it). Every byte below that edge is with the destination
//! peer or in the sending half's restored buffer, so acknowledging it is safe; every byte above it is
//! still in the source peer's retransmission queue, since the dead primary acknowledged only bytes that
//! the other peer or the standby held.

use crate::delta::{Direction, HalfProgress};
use crate::store::StoredFlow;
use dataplane::tcp::{DecodeError, SavedConnection};

/// A flow ready to be installed: the halves to restore and the bytes each must send from its SND.UNA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    pub client: SavedConnection,
    pub server: SavedConnection,
    /// The client's MAC, when the record carried it after the client half.
    pub client_mac: Option<[u8; 6]>,
    /// Backend bytes the client has not acknowledged (held by the standby), from the client half's SND.UNA.
    pub client_send: Vec<u8>,
    /// Client bytes the backend has not acknowledged, from the server half's SND.UNA.
    pub server_send: Vec<u8>,
    /// Whether a progress record moved the halves past their last full save.
    pub advanced: bool,
}

/// Why a stored flow cannot be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("client half: {0}")]
    ClientHalf(DecodeError),
    #[error("server half: {0}")]
    ServerHalf(DecodeError),
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn seq_max(a: u32, b: u32) -> u32 {
    if seq_lt(a, b) {
        b
    } else {
        a
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Moves a half's send side and clocks forward to its progress (never backwards).
fn advance_send(s: &mut SavedConnection, p: &HalfProgress) {
    let acked = if s.fin_queued { seq_min_of(p.peer_acked, s.snd_nxt) } else { p.peer_acked };
    if seq_lt(s.snd_una, acked) {
        s.snd_una = acked;
        s.snd_wnd = p.snd_wnd;
        s.snd_wl2 = acked;
    }
    if seq_lt(s.snd_nxt, s.snd_una) {
        s.snd_nxt = s.snd_una;
    }
    s.ts_last = seq_max(s.ts_last, p.ts_val);
    s.ts_recent = seq_max(s.ts_recent, p.ts_recent);
}

fn seq_min_of(a: u32, b: u32) -> u32 {
    if seq_lt(a, b) {
        a
    } else {
        b
    }
}

/// A half whose FIN follows the bytes it is handed, and whose progress shows the dead box sent that FIN:
/// SND.MAX moves past it. The peer already took the FIN, so it finds any segment of ours with a sequence
/// number below it old, and drops it unread (RFC 9293 §3.10.7.4): the takeover's duplicate ACKs, which
/// ask the peer for what it sent the dead box — its own FIN, typically — would all be lost on it.
fn note_fin_sent(s: &mut SavedConnection, handed: u32, p: Option<&HalfProgress>) {
    let Some(p) = p else { return };
    let fin_seq = s.snd_una.wrapping_add(handed);
    if s.fin_queued && p.snd_nxt == fin_seq.wrapping_add(1) && seq_lt(s.snd_nxt, p.snd_nxt) {
        s.snd_nxt = p.snd_nxt;
    }
}

/// The held bytes of `dir` from `from` on, as one contiguous run (a gap ends it).
fn held_from(f: &StoredFlow, dir: Direction, from: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = from;
    for c in f.data(dir) {
        let end = c.seq.wrapping_add(len32(c.bytes.len()));
        if !seq_lt(next, end) {
            continue;
        }
        if seq_lt(next, c.seq) {
            break;
        }
        let skip = usize::try_from(next.wrapping_sub(c.seq)).unwrap_or(usize::MAX);
        if let Some(fresh) = c.bytes.get(skip..) {
            out.extend_from_slice(fresh);
            next = end;
        }
    }
    out
}

/// Sets the receiving half's edge to `edge` (its own sequence space). A half that already took its
/// peer's FIN keeps its edge: the FIN is counted in it.
fn set_rcv_edge(s: &mut SavedConnection, edge: u32, rcv_wnd: Option<u32>) {
    if s.peer_fin {
        return;
    }
    let wnd = rcv_wnd.unwrap_or_else(|| s.rcv_adv.wrapping_sub(s.ack_sent));
    s.rcv_nxt = edge;
    s.ack_sent = edge;
    s.rcv_adv = edge.wrapping_add(wnd.min(1 << 30));
    if s.ack_limit.is_some() {
        s.ack_limit = Some(edge);
    }
}

/// The stream offset of sequence number `seq` on a side whose first data byte is `start`.
fn offset(start: u32, seq: u32) -> u32 {
    seq.wrapping_sub(start)
}

/// The stream offsets `[from, to)` of the held bytes of `dir`, as one contiguous run from the first
/// held byte (a gap ends it): what the standby could hand out for that direction now.
pub fn held_run(f: &StoredFlow, dir: Direction) -> Option<(u64, u64)> {
    let half = match dir {
        Direction::ClientToServer => &f.server_half,
        Direction::ServerToClient => &f.client_half,
    };
    let (sender, _) = SavedConnection::decode(half).ok()?;
    let first = f.data(dir).next()?;
    let mut next = first.seq;
    for c in f.data(dir) {
        if c.seq != next {
            break;
        }
        next = c.seq.wrapping_add(len32(c.bytes.len()));
    }
    let from = u64::from(offset(sender.iss.wrapping_add(1), first.seq));
    Some((from, from + u64::from(next.wrapping_sub(first.seq))))
}

/// Builds the halves to install for `f`.
pub fn resume(f: &StoredFlow) -> Result<Resumed, ResumeError> {
    let (mut client, used) = SavedConnection::decode(&f.client_half).map_err(ResumeError::ClientHalf)?;
    let (mut server, _) = SavedConnection::decode(&f.server_half).map_err(ResumeError::ServerHalf)?;
    let client_mac =
        f.client_half.get(used..used.saturating_add(6)).and_then(|m| <[u8; 6]>::try_from(m).ok());
    let both_open = client.state.is_synchronized() && server.state.is_synchronized();
    if !both_open {
        // A half still in its handshake resumes from the handshake, as saved.
        return Ok(Resumed {
            client,
            server,
            client_mac,
            client_send: Vec::new(),
            server_send: Vec::new(),
            advanced: false,
        });
    }
    let mut advanced = false;
    let (mut c_wnd, mut s_wnd) = (None, None);
    if let Some((pc, ps)) = &f.progress {
        advance_send(&mut client, pc);
        advance_send(&mut server, ps);
        c_wnd = Some(pc.rcv_wnd);
        s_wnd = Some(ps.rcv_wnd);
        advanced = true;
    }
    // Client → server: the server half sends the held bytes; the client half's edge follows them.
    let server_send = held_from(f, Direction::ClientToServer, server.snd_una);
    let c2s_end = offset(server.iss.wrapping_add(1), server.snd_una).wrapping_add(len32(server_send.len()));
    let edge = client.irs.wrapping_add(1).wrapping_add(c2s_end);
    set_rcv_edge(&mut client, edge, c_wnd);
    // Server → client, the same way round.
    let client_send = held_from(f, Direction::ServerToClient, client.snd_una);
    let s2c_end = offset(client.iss.wrapping_add(1), client.snd_una).wrapping_add(len32(client_send.len()));
    let edge = server.irs.wrapping_add(1).wrapping_add(s2c_end);
    set_rcv_edge(&mut server, edge, s_wnd);
    let progress = f.progress.as_ref();
    for (half, bytes, p) in [
        (&mut client, &client_send, progress.map(|p| &p.0)),
        (&mut server, &server_send, progress.map(|p| &p.1)),
    ] {
        if !bytes.is_empty() && !half.fin_queued {
            // The engine sends what it is handed as new data from SND.UNA.
            half.snd_nxt = half.snd_una;
        }
        note_fin_sent(half, len32(bytes.len()), p);
    }
    Ok(Resumed { client, server, client_mac, client_send, server_send, advanced })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{FlowKey, Policy, RelayOffsets};
    use crate::store::DataChunk;
    use dataplane::tcp::{CongestionAlgorithm, State};
    use std::collections::VecDeque;

    /// An established half whose first data byte is `iss + 1` both ways, at stream offset 0.
    fn half(iss: u32, irs: u32) -> SavedConnection {
        SavedConnection {
            local: "198.18.0.1:80".parse().unwrap(),
            remote: "198.18.0.2:40000".parse().unwrap(),
            state: State::Established,
            iss,
            irs,
            relay_offset: 0,
            snd_una: iss.wrapping_add(1),
            snd_nxt: iss.wrapping_add(1),
            snd_wnd: 65535,
            snd_wl1: irs,
            snd_wl2: iss.wrapping_add(1),
            max_snd_wnd: 65535,
            rcv_nxt: irs.wrapping_add(1),
            ack_sent: irs.wrapping_add(1),
            rcv_adv: irs.wrapping_add(65536),
            ack_limit: Some(irs.wrapping_add(1)),
            ts_last: 100,
            ts_recent: 7,
            cwnd: 14600,
            ssthresh: u32::MAX,
            srtt_us: 200,
            rttvar_us: 100,
            rto_ms: 200,
            peer_mss: 1460,
            snd_wscale: 0,
            rcv_wscale: 0,
            wscale_ok: false,
            sack_ok: true,
            ts_ok: true,
            fin_queued: false,
            peer_fin: false,
            congestion: CongestionAlgorithm::NewReno,
        }
    }

    // Client half: iss 1000 (server→client bytes), irs 5000 (client→server bytes). Server half: iss
    // u32::MAX - 10 (client→server bytes, wrapping), irs 9000 (server→client bytes).
    const C_ISS: u32 = 1000;
    const C_IRS: u32 = 5000;
    const S_ISS: u32 = u32::MAX - 10;
    const S_IRS: u32 = 9000;

    fn flow(progress: Option<(HalfProgress, HalfProgress)>, data: [VecDeque<DataChunk>; 2]) -> StoredFlow {
        let mut client_half = Vec::new();
        half(C_ISS, C_IRS).encode(&mut client_half);
        client_half.extend_from_slice(&[2, 0, 0, 0, 0, 7]);
        let mut server_half = Vec::new();
        half(S_ISS, S_IRS).encode(&mut server_half);
        StoredFlow {
            id: 1,
            key: FlowKey::default(),
            policy: Policy::Replica,
            offsets: RelayOffsets::default(),
            client_half,
            server_half,
            progress,
            data,
        }
    }

    fn progress(peer_acked: u32, rcv_nxt: u32, ts_val: u32) -> HalfProgress {
        HalfProgress {
            peer_acked,
            snd_nxt: peer_acked.wrapping_add(500),
            rcv_nxt,
            snd_wnd: 30_000,
            rcv_wnd: 40_000,
            ts_recent: 9,
            ts_val,
        }
    }

    #[test]
    fn without_progress_the_halves_resume_from_their_save() {
        let r = resume(&flow(None, [VecDeque::new(), VecDeque::new()])).unwrap();
        assert!(!r.advanced);
        assert_eq!(r.client, half(C_ISS, C_IRS));
        assert_eq!(r.server, half(S_ISS, S_IRS));
        assert_eq!(r.client_mac, Some([2, 0, 0, 0, 0, 7]));
        assert!(r.client_send.is_empty() && r.server_send.is_empty());
    }

    #[test]
    fn progress_moves_both_halves_and_ties_each_receive_edge_to_the_other_send_edge() {
        // Backend policy: the client acknowledged 300 backend bytes, the backend 800 client bytes (the
        // client half had acknowledged only 700 of them to the client when it was recorded).
        let pc = progress(C_ISS + 1 + 300, C_IRS + 1 + 700, 50);
        let ps = progress(S_ISS.wrapping_add(1 + 800), S_IRS + 1 + 250, 400);
        let r = resume(&flow(Some((pc, ps)), [VecDeque::new(), VecDeque::new()])).unwrap();
        assert!(r.advanced);
        assert_eq!(r.client.snd_una, C_ISS + 1 + 300);
        assert_eq!(r.client.snd_nxt, r.client.snd_una, "nothing in flight that the engine does not hold");
        assert_eq!(r.server.snd_una, S_ISS.wrapping_add(1 + 800));
        // Each receive edge is where the other half's stream ends: everything below is with the peer.
        assert_eq!(r.client.rcv_nxt, C_IRS + 1 + 800);
        assert_eq!(r.client.ack_sent, r.client.rcv_nxt);
        assert_eq!(r.server.rcv_nxt, S_IRS + 1 + 300);
        assert_eq!(r.client.rcv_adv, r.client.rcv_nxt + 40_000);
        // Clocks never go back (PAWS): the client half keeps its saved base, the server half moves on.
        assert_eq!((r.client.ts_last, r.server.ts_last), (100, 400));
        assert_eq!(r.client.snd_wnd, 30_000);
    }

    #[test]
    fn held_bytes_go_to_the_half_that_sends_them_and_move_the_other_edge() {
        let pc = progress(C_ISS + 1 + 300, C_IRS + 1 + 700, 50);
        let ps = progress(S_ISS.wrapping_add(1 + 800), S_IRS + 1 + 250, 400);
        let c2s: VecDeque<DataChunk> = [
            DataChunk { seq: S_ISS.wrapping_add(1 + 800), bytes: vec![1; 100] },
            DataChunk { seq: S_ISS.wrapping_add(1 + 900), bytes: vec![2; 50] },
            // After a gap: not usable, never handed out.
            DataChunk { seq: S_ISS.wrapping_add(1 + 2000), bytes: vec![3; 10] },
        ]
        .into();
        let s2c: VecDeque<DataChunk> = [DataChunk { seq: C_ISS + 1 + 250, bytes: vec![4; 80] }].into();
        let r = resume(&flow(Some((pc, ps)), [c2s, s2c])).unwrap();
        let mut want = vec![1; 100];
        want.extend([2; 50]);
        assert_eq!(r.server_send, want);
        // Bytes the client already acknowledged (below 300) are cut off.
        assert_eq!(r.client_send, vec![4; 30]);
        assert_eq!(r.client.rcv_nxt, C_IRS + 1 + 950);
        assert_eq!(r.server.rcv_nxt, S_IRS + 1 + 330);
        assert_eq!(r.server.snd_nxt, r.server.snd_una);
    }

    #[test]
    fn a_fin_the_dead_box_sent_moves_snd_max_past_it() {
        // The server half was saved closing (its FIN queued behind 800 client bytes, all acknowledged
        // since); the progress record shows the FIN went out, unacknowledged.
        let fin_seq = S_ISS.wrapping_add(1 + 800);
        let mut f = flow(None, Default::default());
        let mut s = half(S_ISS, S_IRS);
        (s.state, s.fin_queued, s.snd_una, s.snd_nxt) = (State::FinWait1, true, fin_seq, fin_seq);
        f.server_half.clear();
        s.encode(&mut f.server_half);
        let pc = progress(C_ISS + 1, C_IRS + 1 + 800, 50);
        let ps = HalfProgress { snd_nxt: fin_seq.wrapping_add(1), ..progress(fin_seq, S_IRS + 1, 400) };
        f.progress = Some((pc, ps));
        let r = resume(&f).unwrap();
        assert_eq!(r.server.state, State::FinWait1);
        assert_eq!((r.server.snd_una, r.server.snd_nxt), (fin_seq, fin_seq.wrapping_add(1)));
        // The client half had no FIN queued: its progress's snd_nxt (bytes it sent) is not taken.
        assert_eq!(r.client.snd_nxt, r.client.snd_una);
        // A progress record from before the FIN left changes nothing.
        let ps = HalfProgress { snd_nxt: fin_seq, ..ps };
        f.progress = Some((pc, ps));
        let r = resume(&f).unwrap();
        assert_eq!((r.server.snd_una, r.server.snd_nxt), (fin_seq, fin_seq));
        // Nor does one whose SND.MAX is past bytes the half does not hold (they were data, not the FIN).
        let ps = HalfProgress { snd_nxt: fin_seq.wrapping_add(2), ..ps };
        f.progress = Some((pc, ps));
        let r = resume(&f).unwrap();
        assert_eq!((r.server.snd_una, r.server.snd_nxt), (fin_seq, fin_seq));
    }

    #[test]
    fn old_progress_never_moves_a_half_back() {
        // A progress record older than the last full save (the save came after it).
        let pc = progress(C_ISS, C_IRS, 1);
        let ps = progress(S_ISS, S_IRS, 1);
        let r = resume(&flow(Some((pc, ps)), [VecDeque::new(), VecDeque::new()])).unwrap();
        assert_eq!(r.client.snd_una, C_ISS + 1);
        assert_eq!(r.server.snd_una, S_ISS.wrapping_add(1));
        assert_eq!(r.client.ts_last, 100);
    }

    #[test]
    fn a_half_in_its_handshake_resumes_as_saved() {
        let mut f =
            flow(Some((progress(C_ISS + 50, C_IRS + 50, 1), progress(S_ISS, S_IRS, 1))), Default::default());
        let mut c = half(C_ISS, C_IRS);
        c.state = State::SynReceived;
        f.client_half.clear();
        c.encode(&mut f.client_half);
        let r = resume(&f).unwrap();
        assert!(!r.advanced);
        assert_eq!(r.client, c);
        assert_eq!(r.client_mac, None);
    }

    #[test]
    fn garbage_halves_are_an_error() {
        let mut f = flow(None, Default::default());
        f.server_half = vec![9; 3];
        assert!(matches!(resume(&f), Err(ResumeError::ServerHalf(_))));
    }
}
