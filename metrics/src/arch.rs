//! The layer table of the FID Inception network (TF graph `inception-2015-12-05`, as ported by
//! pytorch-fid): every convolution with its pytorch-fid name, shape, stride and padding, and
//! the block structure. The network code and the weight loaders both read this one table, so
//! a checkpoint is checked against exactly what the forward pass uses.

/// One convolution (always followed by batch norm without scale, eps 1e-3, and ReLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Block, e.g. `Mixed_5b` (or the stem layer, e.g. `Conv2d_1a_3x3`).
    pub block: &'static str,
    /// Branch within the block, e.g. `branch5x5_2` (empty for stem layers).
    pub branch: &'static str,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Padding (rows).
    pub ph: usize,
    /// Padding (columns).
    pub pw: usize,
}

impl ConvSpec {
    /// The pytorch-fid name prefix, e.g. `Mixed_5b.branch5x5_2` or `Conv2d_1a_3x3`.
    pub fn name(&self) -> String {
        if self.branch.is_empty() {
            self.block.to_string()
        } else {
            format!("{}.{}", self.block, self.branch)
        }
    }
}

/// Batch-norm epsilon of the TF graph.
pub const BN_EPS: f64 = 1e-3;
/// Feature dimension of `pool_3`.
pub const DIMS: usize = 2048;
/// Input resolution.
pub const INPUT: usize = 299;

#[allow(clippy::too_many_arguments)]
const fn c(
    block: &'static str,
    branch: &'static str,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    ph: usize,
    pw: usize,
) -> ConvSpec {
    ConvSpec {
        block,
        branch,
        cin,
        cout,
        kh,
        kw,
        stride,
        ph,
        pw,
    }
}

/// The kind of pooling on an Inception block's pool branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolBranch {
    /// 3×3 stride 1 average pool with padding 1 that does not count the padding (TF).
    AvgExcludePad,
    /// 3×3 stride 1 max pool with padding 1 (`Mixed_7c` of the TF graph).
    Max,
}

/// A block of the network, in forward order.
#[derive(Debug, Clone, Copy)]
pub enum Block {
    /// A plain convolution of the stem.
    Conv(ConvSpec),
    /// 3×3 stride 2 max pool without padding.
    MaxPool,
    /// InceptionA (`Mixed_5b/5c/5d`).
    A {
        /// Block name.
        name: &'static str,
        /// Input channels.
        cin: usize,
        /// Channels of the pool branch.
        pool: usize,
    },
    /// InceptionB (`Mixed_6a`).
    B {
        /// Block name.
        name: &'static str,
        /// Input channels.
        cin: usize,
    },
    /// InceptionC (`Mixed_6b..6e`).
    C {
        /// Block name.
        name: &'static str,
        /// Channels of the factorised 7×7 towers.
        c7: usize,
    },
    /// InceptionD (`Mixed_7a`).
    D {
        /// Block name.
        name: &'static str,
    },
    /// InceptionE (`Mixed_7b`, `Mixed_7c`).
    E {
        /// Block name.
        name: &'static str,
        /// Input channels.
        cin: usize,
        /// Pool branch kind.
        pool: PoolBranch,
    },
}

/// The whole network up to (not including) the final global average pool.
pub const BLOCKS: [Block; 18] = [
    Block::Conv(c("Conv2d_1a_3x3", "", 3, 32, 3, 3, 2, 0, 0)),
    Block::Conv(c("Conv2d_2a_3x3", "", 32, 32, 3, 3, 1, 0, 0)),
    Block::Conv(c("Conv2d_2b_3x3", "", 32, 64, 3, 3, 1, 1, 1)),
    Block::MaxPool,
    Block::Conv(c("Conv2d_3b_1x1", "", 64, 80, 1, 1, 1, 0, 0)),
    Block::Conv(c("Conv2d_4a_3x3", "", 80, 192, 3, 3, 1, 0, 0)),
    Block::MaxPool,
    Block::A {
        name: "Mixed_5b",
        cin: 192,
        pool: 32,
    },
    Block::A {
        name: "Mixed_5c",
        cin: 256,
        pool: 64,
    },
    Block::A {
        name: "Mixed_5d",
        cin: 288,
        pool: 64,
    },
    Block::B {
        name: "Mixed_6a",
        cin: 288,
    },
    Block::C {
        name: "Mixed_6b",
        c7: 128,
    },
    Block::C {
        name: "Mixed_6c",
        c7: 160,
    },
    Block::C {
        name: "Mixed_6d",
        c7: 160,
    },
    Block::C {
        name: "Mixed_6e",
        c7: 192,
    },
    Block::D { name: "Mixed_7a" },
    Block::E {
        name: "Mixed_7b",
        cin: 1280,
        pool: PoolBranch::AvgExcludePad,
    },
    Block::E {
        name: "Mixed_7c",
        cin: 2048,
        pool: PoolBranch::Max,
    },
];

/// Convolutions of an InceptionA block, in concatenation order of their branches:
/// `[1x1] [5x5_1 → 5x5_2] [dbl_1 → dbl_2 → dbl_3] [pool → branch_pool]`.
pub fn a_convs(name: &'static str, cin: usize, pool: usize) -> [ConvSpec; 7] {
    [
        c(name, "branch1x1", cin, 64, 1, 1, 1, 0, 0),
        c(name, "branch5x5_1", cin, 48, 1, 1, 1, 0, 0),
        c(name, "branch5x5_2", 48, 64, 5, 5, 1, 2, 2),
        c(name, "branch3x3dbl_1", cin, 64, 1, 1, 1, 0, 0),
        c(name, "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1),
        c(name, "branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1),
        c(name, "branch_pool", cin, pool, 1, 1, 1, 0, 0),
    ]
}

/// InceptionB: `[3x3 (s2)] [dbl_1 → dbl_2 → dbl_3 (s2)] [maxpool]`.
pub fn b_convs(name: &'static str, cin: usize) -> [ConvSpec; 4] {
    [
        c(name, "branch3x3", cin, 384, 3, 3, 2, 0, 0),
        c(name, "branch3x3dbl_1", cin, 64, 1, 1, 1, 0, 0),
        c(name, "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1),
        c(name, "branch3x3dbl_3", 96, 96, 3, 3, 2, 0, 0),
    ]
}

/// InceptionC: `[1x1] [7x7_1 → 1×7 → 7×1] [dbl_1 → 7×1 → 1×7 → 7×1 → 1×7] [pool → branch_pool]`.
pub fn c_convs(name: &'static str, c7: usize) -> [ConvSpec; 10] {
    [
        c(name, "branch1x1", 768, 192, 1, 1, 1, 0, 0),
        c(name, "branch7x7_1", 768, c7, 1, 1, 1, 0, 0),
        c(name, "branch7x7_2", c7, c7, 1, 7, 1, 0, 3),
        c(name, "branch7x7_3", c7, 192, 7, 1, 1, 3, 0),
        c(name, "branch7x7dbl_1", 768, c7, 1, 1, 1, 0, 0),
        c(name, "branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0),
        c(name, "branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3),
        c(name, "branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0),
        c(name, "branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3),
        c(name, "branch_pool", 768, 192, 1, 1, 1, 0, 0),
    ]
}

/// InceptionD: `[3x3_1 → 3x3_2 (s2)] [7x7x3_1 → 1×7 → 7×1 → 3×3 (s2)] [maxpool]`.
pub fn d_convs(name: &'static str) -> [ConvSpec; 6] {
    [
        c(name, "branch3x3_1", 768, 192, 1, 1, 1, 0, 0),
        c(name, "branch3x3_2", 192, 320, 3, 3, 2, 0, 0),
        c(name, "branch7x7x3_1", 768, 192, 1, 1, 1, 0, 0),
        c(name, "branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3),
        c(name, "branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0),
        c(name, "branch7x7x3_4", 192, 192, 3, 3, 2, 0, 0),
    ]
}

/// InceptionE: `[1x1] [3x3_1 → (2a 1×3 | 2b 3×1)] [dbl_1 → dbl_2 → (3a 1×3 | 3b 3×1)]
/// [pool → branch_pool]`.
pub fn e_convs(name: &'static str, cin: usize) -> [ConvSpec; 9] {
    [
        c(name, "branch1x1", cin, 320, 1, 1, 1, 0, 0),
        c(name, "branch3x3_1", cin, 384, 1, 1, 1, 0, 0),
        c(name, "branch3x3_2a", 384, 384, 1, 3, 1, 0, 1),
        c(name, "branch3x3_2b", 384, 384, 3, 1, 1, 1, 0),
        c(name, "branch3x3dbl_1", cin, 448, 1, 1, 1, 0, 0),
        c(name, "branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1),
        c(name, "branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1),
        c(name, "branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0),
        c(name, "branch_pool", cin, 192, 1, 1, 1, 0, 0),
    ]
}

/// Every convolution of the network, in forward order (94 of them).
pub fn all_convs() -> Vec<ConvSpec> {
    let mut v = Vec::with_capacity(94);
    for b in BLOCKS {
        match b {
            Block::Conv(s) => v.push(s),
            Block::MaxPool => {}
            Block::A { name, cin, pool } => v.extend(a_convs(name, cin, pool)),
            Block::B { name, cin } => v.extend(b_convs(name, cin)),
            Block::C { name, c7 } => v.extend(c_convs(name, c7)),
            Block::D { name } => v.extend(d_convs(name)),
            Block::E { name, cin, .. } => v.extend(e_convs(name, cin)),
        }
    }
    v
}

/// Multiply-accumulates of one image's forward pass at [`INPUT`]×[`INPUT`] (convolutions only;
/// pools and the bias/ReLU epilogues are a rounding error beside them). Within a block every
/// convolution reads the block's input resolution: the A, C and E blocks keep it ("same"
/// padding, stride 1) and the B and D blocks end each chain in a stride-2 convolution.
pub fn macs_per_image() -> u64 {
    let out = |n: usize, k: usize, s: &ConvSpec, p: usize| (n + 2 * p - k) / s.stride + 1;
    let conv = |s: &ConvSpec, h: usize, w: usize| {
        let (ho, wo) = (out(h, s.kh, s, s.ph), out(w, s.kw, s, s.pw));
        ((s.kh * s.kw * s.cin * s.cout * ho * wo) as u64, ho, wo)
    };
    let (mut h, mut w, mut macs) = (INPUT, INPUT, 0u64);
    for b in BLOCKS {
        let convs: Vec<ConvSpec> = match b {
            Block::Conv(s) => {
                let (m, ho, wo) = conv(&s, h, w);
                (macs, h, w) = (macs + m, ho, wo);
                continue;
            }
            Block::MaxPool => {
                (h, w) = ((h - 3) / 2 + 1, (w - 3) / 2 + 1);
                continue;
            }
            Block::A { name, cin, pool } => a_convs(name, cin, pool).to_vec(),
            Block::B { name, cin } => b_convs(name, cin).to_vec(),
            Block::C { name, c7 } => c_convs(name, c7).to_vec(),
            Block::D { name } => d_convs(name).to_vec(),
            Block::E { name, cin, .. } => e_convs(name, cin).to_vec(),
        };
        let (mut ho, mut wo) = (h, w);
        for s in &convs {
            let (m, a, b) = conv(s, h, w);
            macs += m;
            if s.stride > 1 {
                (ho, wo) = (a, b);
            }
        }
        (h, w) = (ho, wo);
    }
    macs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published cost of Inception v3 at 299×299 is 5.71 GMAC (torchvision's model card;
    /// the FID network has the same convolutions).
    #[test]
    fn macs_match_the_published_cost() {
        let g = macs_per_image() as f64 / 1e9;
        assert!((g - 5.71).abs() < 0.01, "{g} GMAC");
    }

    #[test]
    fn table_matches_pytorch_fid_key_count() {
        let convs = all_convs();
        assert_eq!(convs.len(), 94);
        // 94 convs × 5 tensors + fc.weight + fc.bias = 472, as in pytorch-fid's state dict.
        assert_eq!(convs.len() * 5 + 2, 472);
        let names: std::collections::BTreeSet<_> = convs.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), 94, "names are unique");
    }

    #[test]
    fn channels_chain() {
        // Output channels of every block equal the next block's input.
        let a = |cin: usize, pool: usize| {
            let s = a_convs("x", cin, pool);
            s[0].cout + s[2].cout + s[5].cout + s[6].cout
        };
        assert_eq!(a(192, 32), 256);
        assert_eq!(a(256, 64), 288);
        assert_eq!(a(288, 64), 288);
        let b = b_convs("x", 288);
        assert_eq!(b[0].cout + b[3].cout + 288, 768);
        let d = d_convs("x");
        assert_eq!(d[1].cout + d[5].cout + 768, 1280);
        let e = e_convs("x", 1280);
        assert_eq!(e[0].cout + 2 * e[2].cout + 2 * e[6].cout + e[8].cout, 2048);
    }
}
