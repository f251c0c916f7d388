//! A random forest of smartcore decision trees, grown so that rare overloads
//! are learned and a probability comes out.
//!
//! Why not `smartcore::ensemble::RandomForestClassifier` as is: it trains on
//! one thread, has no `predict_proba`, and bootstraps from the whole,
//! imbalanced data set (overload onset is well under 1 % of samples), so its
//! trees mostly see negatives and its majority vote almost never says
//! "overload". Instead each tree here is a smartcore
//! [`DecisionTreeClassifier`] (the same CART learner the smartcore forest
//! uses) fitted on its own *balanced bootstrap* (positives drawn with
//! replacement, and `neg_per_pos` times as many negatives drawn from all the
//! negatives, so every negative gets a chance across trees while no tree is
//! swamped: a "balanced random forest") and on a random subset of the
//! features (random subspace, as smartcore's forest does per tree with its
//! `m`). Trees are fitted on all cores with `std::thread::scope`.
//!
//! Once fitted, each tree is copied into a flat array of nodes (read through
//! smartcore's serde form, since its nodes are private) and every node gets
//! the share of positive bag rows that reached it. The forest's probability
//! is the mean over trees of the leaf's share (what scikit-learn's
//! `predict_proba` does), which ranks samples more finely than the share of
//! trees voting overload; the flat form also makes a prediction a few
//! hundred comparisons with no allocation (well under the 20 µs budget) and
//! serializes with serde, independent of smartcore's internals.

use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::tree::decision_tree_classifier::{
    DecisionTreeClassifier, DecisionTreeClassifierParameters,
};

use crate::features::{Features, N_FEATURES};

/// Why a forest could not be grown.
#[derive(Debug, thiserror::Error)]
pub enum ForestError {
    /// one class is missing from the training rows
    #[error("cannot train: {positives} positive and {negatives} negative rows (both are needed)")]
    OneClass {
        /// Positive rows.
        positives: usize,
        /// Negative rows.
        negatives: usize,
    },
    /// smartcore refused to fit a tree
    #[error("fitting a tree: {0}")]
    Fit(String),
    /// a fitted tree could not be read back
    #[error("reading a fitted tree: {0}")]
    Read(String),
}

/// How the forest is grown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    /// Trees.
    pub trees: u16,
    /// Deepest a tree may grow.
    pub max_depth: u16,
    /// Fewest bag rows in a leaf.
    pub min_samples_leaf: usize,
    /// Share of the features each tree sees (0..=1).
    pub feature_fraction: f64,
    /// Negatives drawn per positive in each tree's bag.
    pub neg_per_pos: f64,
    /// Most rows in one tree's bag (positives are drawn down to fit).
    pub max_bag_rows: usize,
    /// Seed of every random choice (same data, same seed: same forest).
    pub seed: u64,
    /// Features no tree may read (bit i: feature i), e.g. those that name
    /// a machine rather than describe its load, which let trees learn one
    /// VM by heart instead of how load evolves.
    #[serde(default)]
    pub exclude: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            trees: 100,
            max_depth: 12,
            min_samples_leaf: 3,
            feature_fraction: 0.6,
            neg_per_pos: 1.0,
            max_bag_rows: 20_000,
            seed: 7,
            exclude: 0,
        }
    }
}

impl ForestParams {
    /// As `(name, value)` pairs, for `model.trained`.
    pub fn named(&self, prefix: &str) -> Vec<(String, f64)> {
        [
            ("trees", f64::from(self.trees)),
            ("max_depth", f64::from(self.max_depth)),
            ("min_samples_leaf", self.min_samples_leaf as f64),
            ("feature_fraction", self.feature_fraction),
            ("neg_per_pos", self.neg_per_pos),
            ("max_bag_rows", self.max_bag_rows as f64),
            ("seed", self.seed as f64),
            ("excluded_features", f64::from(self.exclude.count_ones())),
        ]
        .into_iter()
        .map(|(n, v)| (format!("{prefix}{n}"), v))
        .collect()
    }
}

/// One node of a flattened tree; a leaf has `left == 0` (the root is never
/// a child).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Node {
    feature: u16,
    /// Go left when the feature is at or below this. Features are `f32`, so
    /// smartcore's `f64` split point is stored as the largest `f32` not
    /// above it ([`f32_at_or_below`]): the same decision for every feature
    /// value, half the bytes to walk, and a value that survives a JSON round
    /// trip exactly (an `f64` parsed back may move by an ulp and send a
    /// value equal to it the other way).
    threshold: f32,
    left: u32,
    right: u32,
    /// Share of positive bag rows that reached this node.
    value: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn leaf(&self, x: &Features) -> usize {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.left == 0 {
                return i;
            }
            i = if x[n.feature as usize] <= n.threshold {
                n.left as usize
            } else {
                n.right as usize
            };
        }
    }
}

/// The largest `f32` at or below `v`: for every `f32` x, `x <= result`
/// exactly when `f64::from(x) <= v`.
fn f32_at_or_below(v: f64) -> f32 {
    let t = v as f32;
    if f64::from(t) > v {
        t.next_down()
    } else {
        t
    }
}

/// A fitted forest: the mean of its trees' leaf shares is the probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    trees: Vec<Tree>,
}

/// What fitting produced besides the forest.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The forest.
    pub forest: Forest,
    /// Mean decrease of impurity per feature, summing to 1.
    pub importances: [f64; N_FEATURES],
    /// Out-of-bag probability of every training row (the mean over the
    /// trees whose bag did not hold it; the in-bag mean for the rare row
    /// every tree drew): an honest score on training data, used to choose
    /// the decision cut-off without touching the test split.
    pub oob: Vec<f32>,
    /// Rows drawn into bags, over all trees.
    pub bag_rows: u64,
}

impl Forest {
    /// Probability (0..=1) that `x` is positive.
    pub fn probability(&self, x: &Features) -> f32 {
        if self.trees.is_empty() {
            return 0.0;
        }
        let sum: f32 = self.trees.iter().map(|t| t.nodes[t.leaf(x)].value).sum();
        sum / self.trees.len() as f32
    }

    /// How much each feature moved the probability of `x` away from the
    /// forest's base rate, along the paths `x` takes (each split's change of
    /// the positive share is credited to its feature), averaged over trees.
    pub fn contributions(&self, x: &Features) -> [f64; N_FEATURES] {
        let mut out = [0f64; N_FEATURES];
        for t in &self.trees {
            let mut i = 0usize;
            loop {
                let n = &t.nodes[i];
                if n.left == 0 {
                    break;
                }
                let next = if x[n.feature as usize] <= n.threshold {
                    n.left as usize
                } else {
                    n.right as usize
                };
                out[n.feature as usize] += f64::from(t.nodes[next].value - n.value);
                i = next;
            }
        }
        let k = self.trees.len().max(1) as f64;
        out.iter_mut().for_each(|v| *v /= k);
        out
    }

    /// Trees.
    pub fn len(&self) -> usize {
        self.trees.len()
    }

    /// Whether it has no tree.
    pub fn is_empty(&self) -> bool {
        self.trees.is_empty()
    }
}

/// splitmix64: a tiny seeded generator, so a seed means the same forest on
/// every machine and version of `rand`.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// smartcore's serde form of a fitted tree, the part we read.
#[derive(Deserialize)]
struct SmartTree {
    nodes: Vec<SmartNode>,
    classes: Vec<u32>,
}

#[derive(Deserialize)]
struct SmartNode {
    output: usize,
    split_feature: usize,
    split_value: Option<f64>,
    true_child: Option<usize>,
    false_child: Option<usize>,
}

struct Grown {
    tree: Tree,
    bag: Vec<u32>,
    importances: [f64; N_FEATURES],
}

// Long on purpose: one tree's growth loop (choose a split, partition,
// push the children) reads best as one piece, as in the CART papers.
fn grow(
    x: &[Features],
    y: &[bool],
    pos: &[u32],
    neg: &[u32],
    p: &ForestParams,
    index: u64,
) -> Result<Grown, ForestError> {
    let mut rng = Rng::new(p.seed.wrapping_mul(1_000_003).wrapping_add(index));
    // Features this tree sees.
    let mut feats: Vec<usize> = (0..N_FEATURES)
        .filter(|f| p.exclude & (1 << f) == 0)
        .collect();
    if feats.is_empty() {
        feats = (0..N_FEATURES).collect();
    }
    let avail = feats.len();
    let m = ((avail as f64 * p.feature_fraction).round() as usize).clamp(1, avail);
    for i in 0..m {
        let j = i + rng.below(avail - i);
        feats.swap(i, j);
    }
    feats.truncate(m);
    feats.sort_unstable();
    // Its balanced bootstrap.
    let ratio = p.neg_per_pos.max(0.01);
    let n_pos = pos
        .len()
        .min(((p.max_bag_rows as f64) / (1.0 + ratio)).max(1.0) as usize);
    let n_neg = ((n_pos as f64 * ratio).round() as usize).max(1);
    let mut bag: Vec<u32> = Vec::with_capacity(n_pos + n_neg);
    bag.extend((0..n_pos).map(|_| pos[rng.below(pos.len())]));
    bag.extend((0..n_neg).map(|_| neg[rng.below(neg.len())]));
    let mut values = Vec::with_capacity(bag.len() * m);
    for &r in &bag {
        let row = &x[r as usize];
        values.extend(feats.iter().map(|&f| row[f]));
    }
    let labels: Vec<u32> = bag.iter().map(|&r| u32::from(y[r as usize])).collect();
    let matrix = DenseMatrix::new(bag.len(), m, values, false)
        .map_err(|e| ForestError::Fit(e.to_string()))?;
    let params = DecisionTreeClassifierParameters::default()
        .with_max_depth(p.max_depth)
        .with_min_samples_leaf(p.min_samples_leaf.max(1))
        .with_min_samples_split((2 * p.min_samples_leaf).max(2));
    let fitted = DecisionTreeClassifier::fit(&matrix, &labels, params)
        .map_err(|e| ForestError::Fit(e.to_string()))?;
    let mut importances = [0f64; N_FEATURES];
    for (i, v) in fitted
        .compute_feature_importances(false)
        .into_iter()
        .enumerate()
    {
        if v.is_finite() {
            importances[feats[i]] += v;
        }
    }
    let smart: SmartTree = serde_json::to_value(&fitted)
        .and_then(serde_json::from_value)
        .map_err(|e| ForestError::Read(e.to_string()))?;
    let mut nodes = Vec::with_capacity(smart.nodes.len());
    for n in &smart.nodes {
        let (left, right, threshold) = match (n.true_child, n.false_child, n.split_value) {
            (Some(l), Some(r), Some(v)) if l > 0 && r > 0 => {
                (l as u32, r as u32, f32_at_or_below(v))
            }
            _ => (0, 0, 0.0),
        };
        let class = smart.classes.get(n.output).copied().unwrap_or(0);
        nodes.push(Node {
            feature: feats.get(n.split_feature).copied().unwrap_or(0) as u16,
            threshold,
            left,
            right,
            value: class as f32,
        });
    }
    if nodes.is_empty() {
        return Err(ForestError::Read("a tree without nodes".into()));
    }
    let mut tree = Tree { nodes };
    // Positive share of the bag rows reaching each node.
    let mut hits = vec![(0u32, 0u32); tree.nodes.len()];
    for &r in &bag {
        let row = &x[r as usize];
        let mut i = 0usize;
        loop {
            hits[i].0 += 1;
            hits[i].1 += u32::from(y[r as usize]);
            let n = &tree.nodes[i];
            if n.left == 0 {
                break;
            }
            i = if row[n.feature as usize] <= n.threshold {
                n.left as usize
            } else {
                n.right as usize
            };
        }
    }
    for (n, (total, positive)) in tree.nodes.iter_mut().zip(hits) {
        if total > 0 {
            n.value = positive as f32 / total as f32;
        }
    }
    Ok(Grown {
        tree,
        bag,
        importances,
    })
}

/// Grows a forest on rows `x` with labels `y`, on `threads` threads.
///
/// # Errors
/// [`ForestError`] when a class is missing or smartcore fails.
pub fn fit(
    x: &[Features],
    y: &[bool],
    p: &ForestParams,
    threads: usize,
) -> Result<Fitted, ForestError> {
    grow_all(x, y, p, threads, true)
}

/// Grows a forest without its out-of-bag predictions (when later rows,
/// not out-of-bag ones, will judge it: a fold of model selection).
///
/// # Errors
/// As [`fit`].
pub fn fit_forest(
    x: &[Features],
    y: &[bool],
    p: &ForestParams,
    threads: usize,
) -> Result<Forest, ForestError> {
    grow_all(x, y, p, threads, false).map(|f| f.forest)
}

fn grow_all(
    x: &[Features],
    y: &[bool],
    p: &ForestParams,
    threads: usize,
    with_oob: bool,
) -> Result<Fitted, ForestError> {
    let pos: Vec<u32> = (0..y.len() as u32).filter(|&i| y[i as usize]).collect();
    let neg: Vec<u32> = (0..y.len() as u32).filter(|&i| !y[i as usize]).collect();
    if pos.is_empty() || neg.is_empty() {
        return Err(ForestError::OneClass {
            positives: pos.len(),
            negatives: neg.len(),
        });
    }
    let threads = threads.max(1);
    let n_trees = usize::from(p.trees.max(1));
    let grown: Vec<Result<Grown, ForestError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (pos, neg) = (&pos, &neg);
                s.spawn(move || {
                    (t..n_trees)
                        .step_by(threads)
                        .map(|i| (i, grow(x, y, pos, neg, p, i as u64)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, Result<Grown, ForestError>)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, g)| g).collect()
    });
    let mut trees = Vec::with_capacity(n_trees);
    let mut importances = [0f64; N_FEATURES];
    let mut bags = Vec::with_capacity(n_trees);
    for g in grown {
        let g = g?;
        for (a, b) in importances.iter_mut().zip(g.importances) {
            *a += b;
        }
        trees.push(g.tree);
        bags.push(g.bag);
    }
    if trees.len() != n_trees {
        return Err(ForestError::Fit("a training thread panicked".into()));
    }
    let total: f64 = importances.iter().sum();
    if total > 0.0 {
        importances.iter_mut().for_each(|v| *v /= total);
    }
    let bag_rows = bags.iter().map(|b| b.len() as u64).sum();
    let forest = Forest { trees };
    let oob = if with_oob {
        out_of_bag(&forest, &bags, x, threads)
    } else {
        Vec::new()
    };
    Ok(Fitted {
        forest,
        importances,
        oob,
        bag_rows,
    })
}

fn out_of_bag(forest: &Forest, bags: &[Vec<u32>], x: &[Features], threads: usize) -> Vec<f32> {
    let words = x.len().div_ceil(64);
    let in_bag: Vec<Vec<u64>> = bags
        .iter()
        .map(|b| {
            let mut bits = vec![0u64; words];
            for &r in b {
                bits[r as usize / 64] |= 1 << (r % 64);
            }
            bits
        })
        .collect();
    let chunk = x.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = x
            .chunks(chunk)
            .enumerate()
            .map(|(c, rows)| {
                let in_bag = &in_bag;
                s.spawn(move || {
                    rows.iter()
                        .enumerate()
                        .map(|(k, row)| {
                            let r = c * chunk + k;
                            let (mut sum, mut n) = (0f32, 0u32);
                            for (t, bits) in forest.trees.iter().zip(in_bag) {
                                if bits[r / 64] & (1 << (r % 64)) == 0 {
                                    sum += t.nodes[t.leaf(row)].value;
                                    n += 1;
                                }
                            }
                            if n == 0 {
                                forest.probability(row)
                            } else {
                                sum / n as f32
                            }
                        })
                        .collect::<Vec<f32>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_threshold_and_gives_probabilities() {
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut rng = Rng::new(1);
        for _ in 0..2000 {
            let mut f = [0f32; N_FEATURES];
            for v in f.iter_mut() {
                *v = (rng.below(1000) as f32) / 10.0;
            }
            // Positive when feature 0 is high (and rare).
            y.push(f[0] > 95.0);
            x.push(f);
        }
        let p = ForestParams {
            trees: 20,
            max_depth: 6,
            feature_fraction: 1.0,
            ..ForestParams::default()
        };
        let fitted = fit(&x, &y, &p, 2).unwrap();
        assert_eq!(fitted.forest.len(), 20);
        assert_eq!(fitted.oob.len(), x.len());
        let mut hi = [0f32; N_FEATURES];
        hi[0] = 99.0;
        let lo = [1f32; N_FEATURES];
        assert!(fitted.forest.probability(&hi) > 0.9);
        assert!(fitted.forest.probability(&lo) < 0.1);
        let best = fitted
            .importances
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(best, 0);
        assert!(fitted.forest.contributions(&hi)[0] > 0.3);
        // Same seed, same forest.
        assert_eq!(fit(&x, &y, &p, 1).unwrap().forest, fitted.forest);
        // Round trip through serde (JSON floats may move by an ulp; split
        // points are midpoints between values, so predictions do not).
        let json = serde_json::to_string(&fitted.forest).unwrap();
        let back: Forest = serde_json::from_str(&json).unwrap();
        for row in &x {
            assert_eq!(back.probability(row), fitted.forest.probability(row));
        }
    }

    #[test]
    fn split_points_as_f32_decide_every_value_as_the_f64_did() {
        for v in [0.15f64, 95.05000305175781, -1000.0, 1e-9, -0.3, 0.0, 7.0] {
            let t = f32_at_or_below(v);
            assert!(f64::from(t) <= v);
            assert!(f64::from(t.next_up()) > v);
        }
    }

    #[test]
    fn refuses_a_single_class() {
        let x = vec![[0f32; N_FEATURES]; 10];
        let y = vec![false; 10];
        assert!(matches!(
            fit(&x, &y, &ForestParams::default(), 1),
            Err(ForestError::OneClass { .. })
        ));
    }
}
