//! Multiply-accumulates of the FID Inception per image, by layer kind.
use adt_metrics::arch::*;
fn main() {
    let mut hw = 299usize;
    let mut total = 0u64;
    let mut by_kind = std::collections::BTreeMap::new();
    let conv_out = |hw: usize, s: &ConvSpec| (hw + 2 * s.ph - s.kh) / s.stride + 1;
    let mut add = |s: &ConvSpec, hin: usize| {
        let ho = conv_out(hin, s);
        let m = (ho * ho * s.cout * s.cin * s.kh * s.kw) as u64;
        let kind = if s.kh * s.kw == 1 { "1x1" } else { "kxk" };
        *by_kind.entry(kind).or_insert(0u64) += m;
        total += m;
        ho
    };
    for b in BLOCKS {
        match b {
            Block::Conv(s) => hw = add(&s, hw),
            Block::MaxPool => hw = (hw - 3) / 2 + 1,
            Block::A { name, cin, pool } => {
                for s in a_convs(name, cin, pool) {
                    add(&s, hw);
                }
            }
            Block::B { name, cin } => {
                let v = b_convs(name, cin);
                for s in &v {
                    add(s, hw);
                }
                hw = (hw - 3) / 2 + 1;
            }
            Block::C { name, c7 } => {
                for s in c_convs(name, c7) {
                    add(&s, hw);
                }
            }
            Block::D { name } => {
                for s in d_convs(name) {
                    add(&s, hw);
                }
                hw = (hw - 3) / 2 + 1;
            }
            Block::E { name, cin, .. } => {
                for s in e_convs(name, cin) {
                    add(&s, hw);
                }
            }
        }
    }
    println!(
        "total {:.3} GMAC/image; {:?}",
        total as f64 / 1e9,
        by_kind
            .iter()
            .map(|(k, v)| (k, *v as f64 / 1e9))
            .collect::<Vec<_>>()
    );
}
