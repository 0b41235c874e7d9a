//! A set of user ids in fixed space that tells, subtracted from another,
//! which ids only one of them holds: an invertible Bloom lookup table
//! (Goodrich and Mitzenmacher, 2011). The drift audit keeps the live users
//! Clerk's list showed in one, so that at the walk's end the live users it
//! did not show (deleted in Clerk, their webhook lost) are found without a
//! write per user, in memory that does not grow with the number of users.
//!
//! Each id goes into one cell of each of three sub-tables; a cell keeps how
//! many ids it holds and the XOR of their keys and of their keys' checks.
//! Subtracting one sketch from another cancels the ids both hold; a cell
//! left with a single id (a count of ±1 whose check matches its key) names
//! it, and taking it out of its other two cells frees more ("peeling").
//! Up to about [`DECODES_UP_TO`] differences peel completely, but for the
//! rare ids that share all three cells with another one of the difference;
//! what does not peel, [`Difference::may_hold`] cannot rule out (its
//! [`share`](Difference::unruled_out) of all ids is tiny after a few such
//! ids, most of them past that number).

use std::collections::HashSet;

/// Cells per sub-table.
const SUB_TABLE: usize = 400;
/// Sub-tables: each id goes into one cell of each.
const HASHES: usize = 3;
const CELLS: usize = SUB_TABLE * HASHES;
/// Bytes per cell: count (`i32`), keys (`u64`), checks (`u64`).
const CELL_BYTES: usize = 20;
/// The first byte stored: the layout (cells, hashes, key and check
/// functions). A sketch of another layout is not read as this one.
const LAYOUT: u8 = 1;

/// How many differences a subtraction decodes in full, with high
/// probability: an IBLT of three hashes peels up to about 0.81 differences
/// per cell; this keeps a margin below it.
pub const DECODES_UP_TO: usize = CELLS * 3 / 4;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    count: i32,
    keys: u64,
    checks: u64,
}

impl Cell {
    fn add(&mut self, key: u64, sign: i32) {
        self.count = self.count.wrapping_add(sign);
        self.keys ^= key;
        self.checks ^= check(key);
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The one id this cell holds, if it holds exactly one.
    fn pure(&self) -> Option<u64> {
        (matches!(self.count, 1 | -1) && self.checks == check(self.keys)).then_some(self.keys)
    }
}

/// A set of ids (see the module's documentation). Adding an id twice
/// counts it twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdSketch {
    cells: Vec<Cell>,
}

impl Default for IdSketch {
    fn default() -> Self {
        Self {
            cells: vec![Cell::default(); CELLS],
        }
    }
}

impl IdSketch {
    /// Adds `id`.
    pub fn insert(&mut self, id: &str) {
        self.add(key(id), 1);
    }

    /// What this sketch holds and `other` does not (see [`Difference`]).
    pub fn subtract(&self, other: &Self) -> Difference {
        let mut cells: Vec<Cell> = self.cells.clone();
        for (cell, theirs) in cells.iter_mut().zip(&other.cells) {
            cell.count = cell.count.wrapping_sub(theirs.count);
            cell.keys ^= theirs.keys;
            cell.checks ^= theirs.checks;
        }
        Difference::peel(Self { cells })
    }

    /// As stored: the layout's byte, then 20 bytes per cell, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + CELLS * CELL_BYTES);
        bytes.push(LAYOUT);
        for cell in &self.cells {
            bytes.extend_from_slice(&cell.count.to_le_bytes());
            bytes.extend_from_slice(&cell.keys.to_le_bytes());
            bytes.extend_from_slice(&cell.checks.to_le_bytes());
        }
        bytes
    }

    /// The sketch stored as `bytes`; `None` when they are not one of this
    /// layout.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&LAYOUT, cells) = bytes.split_first()? else {
            return None;
        };
        if cells.len() != CELLS * CELL_BYTES {
            return None;
        }
        let cells = cells
            .chunks_exact(CELL_BYTES)
            .map(|cell| {
                let (count, rest) = cell.split_at(4);
                let (keys, checks) = rest.split_at(8);
                Some(Cell {
                    count: i32::from_le_bytes(count.try_into().ok()?),
                    keys: u64::from_le_bytes(keys.try_into().ok()?),
                    checks: u64::from_le_bytes(checks.try_into().ok()?),
                })
            })
            .collect::<Option<Vec<Cell>>>()?;
        Some(Self { cells })
    }

    fn add(&mut self, key: u64, sign: i32) {
        for index in cells_of(key) {
            self.cells[index].add(key, sign);
        }
    }
}

/// What one sketch holds and another does not. (What only the second
/// holds peels too, and is dropped.)
#[derive(Debug, Clone)]
pub struct Difference {
    /// The keys of the ids only the first sketch holds.
    only_here: HashSet<u64>,
    /// What did not peel: empty when the difference decoded in full.
    left: IdSketch,
    decoded: bool,
}

impl Difference {
    fn peel(mut left: IdSketch) -> Self {
        let mut only_here = HashSet::new();
        let mut pure: Vec<usize> = (0..CELLS)
            .filter(|i| left.cells[*i].pure().is_some())
            .collect();
        while let Some(index) = pure.pop() {
            let cell = left.cells[index];
            // A cell that only looks pure (its keys' XOR happens to check)
            // names a key that would not hash to it.
            let Some(key) = cell.pure().filter(|key| cells_of(*key).any(|i| i == index)) else {
                continue;
            };
            if cell.count == 1 {
                only_here.insert(key);
            }
            left.add(key, -cell.count);
            pure.extend(cells_of(key).filter(|i| left.cells[*i].pure().is_some()));
        }
        let decoded = left.cells.iter().all(Cell::is_empty);
        Self {
            only_here,
            left,
            decoded,
        }
    }

    /// Whether the difference decoded in full: [`may_hold`](Self::may_hold)
    /// is then exact.
    pub fn decoded(&self) -> bool {
        self.decoded
    }

    /// How many ids the difference names as held only by the first sketch.
    pub fn named(&self) -> usize {
        self.only_here.len()
    }

    /// The share of all ids that [`may_hold`](Self::may_hold) cannot rule
    /// out without being named: those whose cells are all left over (0
    /// when the difference decoded in full).
    pub fn unruled_out(&self) -> f64 {
        if self.decoded {
            return 0.0;
        }
        self.left
            .cells
            .chunks_exact(SUB_TABLE)
            .map(|table| {
                table.iter().filter(|cell| !cell.is_empty()).count() as f64 / SUB_TABLE as f64
            })
            .product()
    }

    /// Whether `id` may be held by the first sketch and not the second: it
    /// was named, or (the difference not decoded in full) none of its cells
    /// is left empty.
    pub fn may_hold(&self, id: &str) -> bool {
        let key = key(id);
        self.only_here.contains(&key)
            || (!self.decoded && cells_of(key).all(|i| !self.left.cells[i].is_empty()))
    }
}

/// An id's key: FNV-1a over its bytes, mixed (stable across builds and
/// machines: sketches are stored).
fn key(id: &str) -> u64 {
    let fnv = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    mix(fnv)
}

fn check(key: u64) -> u64 {
    mix(key ^ 0x9e37_79b9_7f4a_7c15)
}

/// The cell of `key` in each sub-table.
fn cells_of(key: u64) -> impl Iterator<Item = usize> {
    (0..HASHES).map(move |table| {
        let spread = mix(key.wrapping_add(table as u64));
        table * SUB_TABLE + (spread % SUB_TABLE as u64) as usize
    })
}

/// SplitMix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(ids: impl IntoIterator<Item = String>) -> IdSketch {
        let mut sketch = IdSketch::default();
        for id in ids {
            sketch.insert(&id);
        }
        sketch
    }

    fn ids(range: std::ops::Range<usize>) -> impl DoubleEndedIterator<Item = String> {
        range.map(|i| format!("user_{i:07}"))
    }

    #[test]
    fn equal_sets_differ_in_nothing() {
        let difference = sketch(ids(0..10_000)).subtract(&sketch(ids(0..10_000).rev()));
        assert!(difference.decoded());
        assert_eq!(difference.named(), 0);
        assert!(!ids(0..10_000).any(|id| difference.may_hold(&id)));
    }

    #[test]
    fn the_ids_only_the_first_holds_are_named_exactly() {
        let here = sketch(ids(0..100_000));
        // The second lacks 1 in 250 of the first's ids and holds 300 others.
        let listed = sketch(
            ids(0..100_000)
                .enumerate()
                .filter(|(i, _)| i % 250 != 7)
                .map(|(_, id)| id)
                .chain(ids(200_000..200_300)),
        );
        let difference = here.subtract(&listed);
        assert!(difference.decoded());
        assert_eq!(difference.named(), 400);
        let held: Vec<usize> = (0..100_000)
            .filter(|i| difference.may_hold(&format!("user_{i:07}")))
            .collect();
        assert_eq!(held, (7..100_000).step_by(250).collect::<Vec<_>>());
    }

    #[test]
    fn past_what_decodes_no_missing_id_is_ruled_out() {
        let here = sketch(ids(0..20_000));
        let listed = sketch(ids(0..20_000).skip(5_000));
        let difference = here.subtract(&listed);
        assert!(!difference.decoded());
        assert!(ids(0..5_000).all(|id| difference.may_hold(&id)));
    }

    #[test]
    fn a_sketch_reads_back_as_stored_and_refuses_other_layouts() {
        let stored = sketch(ids(0..1_000));
        let bytes = stored.to_bytes();
        assert_eq!(bytes.len(), 1 + CELLS * CELL_BYTES);
        assert_eq!(IdSketch::from_bytes(&bytes), Some(stored));
        assert_eq!(IdSketch::from_bytes(&bytes[1..]), None, "no layout byte");
        let mut other_layout = bytes.clone();
        other_layout[0] = LAYOUT + 1;
        assert_eq!(IdSketch::from_bytes(&other_layout), None);
        assert_eq!(IdSketch::from_bytes(&bytes[..bytes.len() - 1]), None);
        assert_eq!(IdSketch::from_bytes(&[]), None);
    }

    #[test]
    fn the_stored_layout_is_stable() {
        // Stored sketches are read by later builds: an id's key and cells,
        // and the bytes a sketch is stored as, must never change (or
        // LAYOUT must). FNV-1a 64 then SplitMix64's finalizer, computed
        // independently.
        let key = key("user_0000001");
        assert_eq!(key, 0x06d1_acf7_eb84_2300);
        assert_eq!(check(key), 0x7fc0_53f4_b722_4b75);
        let mut one = IdSketch::default();
        one.insert("user_0000001");
        let bytes = one.to_bytes();
        let cells: Vec<usize> = cells_of(key).collect();
        for index in 0..CELLS {
            let stored = &bytes[1 + index * CELL_BYTES..1 + (index + 1) * CELL_BYTES];
            let expected: Vec<u8> = if cells.contains(&index) {
                [
                    &1_i32.to_le_bytes()[..],
                    &key.to_le_bytes(),
                    &check(key).to_le_bytes(),
                ]
                .concat()
            } else {
                vec![0; CELL_BYTES]
            };
            assert_eq!(stored, expected, "cell {index}");
        }
        assert_eq!(cells, [CELLS_OF_KEY[0], CELLS_OF_KEY[1], CELLS_OF_KEY[2]]);
    }

    /// The cells of `user_0000001`'s key, as first stored.
    const CELLS_OF_KEY: [usize; 3] = [324, 795, 819];

    #[test]
    fn ids_that_share_all_their_cells_are_not_ruled_out() {
        // These two keys fall in the same three cells: they never peel,
        // and are looked up with the few ids that share those cells.
        let mut first = IdSketch::default();
        first.insert("gone_477738");
        first.insert("gone_128527");
        let difference = first.subtract(&IdSketch::default());
        assert!(!difference.decoded());
        assert!(difference.may_hold("gone_477738") && difference.may_hold("gone_128527"));
        assert!(
            difference.unruled_out() < 1e-7,
            "{}",
            difference.unruled_out()
        );
        assert!(!ids(0..10_000).any(|id| difference.may_hold(&id)));
    }

    proptest::proptest! {
        /// Any two sets that differ by up to a few hundred ids, either way:
        /// every id only the first holds may be held, and they are named
        /// exactly when the difference decodes (but for ids that share all
        /// their cells, a tiny share of all ids is left to look up).
        #[test]
        fn small_differences_are_named_exactly(
            shared in 0..5_000_usize,
            only_first in proptest::collection::hash_set(0..1_000_000_usize, 0..400),
            only_second in 0..300_usize,
        ) {
            let first = sketch(ids(0..shared).chain(only_first.iter().map(|i| format!("gone_{i}"))));
            let second = sketch(ids(0..shared).chain(ids(2_000_000..2_000_000 + only_second)));
            let difference = first.subtract(&second);
            for i in &only_first {
                let gone = format!("gone_{i}");
                proptest::prop_assert!(difference.may_hold(&gone), "{} ruled out", gone);
            }
            proptest::prop_assert!(difference.unruled_out() < 1e-6, "{}", difference.unruled_out());
            if difference.decoded() {
                proptest::prop_assert_eq!(difference.named(), only_first.len());
                for id in ids(0..shared.min(500)) {
                    proptest::prop_assert!(!difference.may_hold(&id), "{} named", id);
                }
            }
        }
    }
}
