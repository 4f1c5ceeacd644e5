//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size filled from
//! each backend's own permutation of the slots, so that removing or adding one backend moves few flows
//! that were not on it.
//!
//! Permutations come from a fixed hash of each backend's address (no seed), so every box that runs the
//! same backend set — the primary, the standby, or several pairs behind ECMP — builds the same table.

use crate::flow::mix64;

/// The default table size: prime, and large enough that 100 backends each get ~650 slots.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

const EMPTY: u16 = u16::MAX;

/// Weights are capped so a table fill stays O(table size) whatever the config says.
pub const MAX_WEIGHT: u32 = 256;

/// A Maglev lookup table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maglev {
    table: Vec<u16>,
}

/// Whether `n` is prime (trial division; table sizes are small).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

impl Maglev {
    /// An empty table of `size` slots (prime, at least 3, below 2^24). `None` when `size` is unfit.
    pub fn new(size: u32) -> Option<Maglev> {
        ((3..(1 << 24)).contains(&size) && is_prime(size))
            .then(|| Maglev { table: vec![EMPTY; size as usize] })
    }

    pub fn size(&self) -> u32 {
        self.table.len() as u32
    }

    /// Refills the table. `backends[i]` is (identity hash, weight) of backend `i`; weight 0 leaves it out.
    /// Each round, a backend claims as many slots as its weight (capped at [`MAX_WEIGHT`]), so the shares
    /// follow the weights.
    pub fn populate(&mut self, backends: &[(u64, u32)]) {
        let m = u64::from(self.size());
        self.table.fill(EMPTY);
        // (index, next position, skip, weight)
        let mut perms: Vec<(u16, u64, u64, u32)> = backends
            .iter()
            .enumerate()
            .take(usize::from(EMPTY))
            .filter(|(_, &(_, w))| w > 0)
            .map(|(i, &(id, w))| {
                let offset = mix64(id ^ 0x6f66_6673_6574_2121) % m;
                let skip = mix64(id ^ 0x736b_6970_7069_6e67) % (m - 1) + 1;
                (i as u16, offset, skip, w.min(MAX_WEIGHT))
            })
            .collect();
        if perms.is_empty() {
            return;
        }
        let mut filled = 0u64;
        'fill: loop {
            for (idx, pos, skip, w) in perms.iter_mut() {
                for _ in 0..*w {
                    // A full cycle of the permutation always finds an empty slot while any remain.
                    while self.table[*pos as usize] != EMPTY {
                        *pos = (*pos + *skip) % m;
                    }
                    self.table[*pos as usize] = *idx;
                    *pos = (*pos + *skip) % m;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
    }

    /// The backend index for a flow hash, or `None` when no backend is in the table.
    #[inline]
    pub fn lookup(&self, flow_hash: u64) -> Option<u16> {
        let slot = (flow_hash % self.table.len() as u64) as usize;
        self.table.get(slot).copied().filter(|&b| b != EMPTY)
    }
}
