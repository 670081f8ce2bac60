//! Protect and unprotect time per request (criterion), AES-CCM-16-64-128, 64-byte and 1 KB
//! payloads: `cargo bench -p tern-oscore --bench protect`.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tern_oscore::{protect_request, unprotect_request, ContextParams, SecurityContext};
use tern_proto::{Code, Message, MessageType, OptionNumber};

fn contexts() -> (SecurityContext, SecurityContext) {
    let secret: Vec<u8> = (1..=16).collect();
    let client = SecurityContext::derive(&ContextParams::new(&secret, &[], &[1])).unwrap();
    let server = SecurityContext::derive(&ContextParams::new(&secret, &[1], &[])).unwrap();
    (client, server)
}

fn request(size: usize) -> Message {
    let mut m = Message::new(MessageType::Con, Code::POST);
    m.mid = 0x1234;
    m.options.set(OptionNumber::URI_HOST, b"localhost".to_vec());
    m.set_path("/sensors/temperature");
    m.payload = vec![0x5a; size];
    m
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("oscore");
    for size in [64usize, 1024] {
        let message = request(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("protect_request", size),
            &message,
            |b, m| {
                let (mut client, _) = contexts();
                b.iter(|| protect_request(&mut client, m, false).unwrap());
            },
        );
        group.bench_with_input(
            BenchmarkId::new("unprotect_request", size),
            &message,
            |b, m| {
                let (mut client, mut server) = contexts();
                b.iter_batched(
                    || protect_request(&mut client, m, false).unwrap().0,
                    |outer| unprotect_request(&mut server, &outer).unwrap(),
                    BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
