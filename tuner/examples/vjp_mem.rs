//! RSS after repeated denoise_vjp calls on tiny (diagnostic).
use adt_plugin_api::HostTensor;
use adt_plugin_host::{Denoise, Kind, Model, Registry};
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}
fn main() {
    let reg = Registry::with_builtins(&[adt_plugin_tiny::header]).unwrap();
    let mut m = Model::create(
        reg.find(Kind::Model, "tiny").unwrap(),
        &serde_json::json!({}),
    )
    .unwrap();
    let caps: Vec<String> = (0..16).map(|_| "a red circle".to_string()).collect();
    let c = m.encode_prompts(&caps).unwrap();
    let u = m.encode_prompts(&[String::new()]).unwrap();
    let x = HostTensor {
        shape: vec![16, 3, 32, 32],
        data: vec![0.1; 16 * 3 * 1024],
    };
    let t = vec![500.0f32; 16];
    for i in 0..3 {
        m.denoise_vjp(
            &Denoise {
                x: &x,
                t: &t,
                cond: c,
                uncond: Some(u),
                guidance: 2.0,
                detach_uncond: false,
            },
            &x,
            false,
        )
        .unwrap();
        println!("after vjp {i}: rss {} MiB", rss() / 1024);
    }
    m.zero_grad().unwrap();
    println!("after zero_grad: rss {} MiB", rss() / 1024);
    for i in 0..4 {
        m.denoise_vjp(
            &Denoise {
                x: &x,
                t: &t,
                cond: c,
                uncond: None,
                guidance: 1.0,
                detach_uncond: false,
            },
            &x,
            false,
        )
        .unwrap();
        println!("no-cfg vjp {i}: rss {} MiB", rss() / 1024);
    }
    for i in 0..4 {
        m.diffusion_loss(&x, c, i, 1.0).unwrap();
        println!("diffusion_loss {i}: rss {} MiB", rss() / 1024);
    }
}
