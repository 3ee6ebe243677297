//! Microbenchmarks of the protocol, each beside its bound measured in the same run:
//!
//! * `cipher/seal|open`: one FSChaCha20Poly1305 packet, encrypted / authenticated and
//!   decrypted, contents of 64 B, 1 KiB, 64 KiB and 4 MB;
//! * `aead/portable|simd`: the two ChaCha20-Poly1305 engines from 64 B to 4 KiB, to place
//!   the size at which packets switch from one to the other (`aead::Engine::SIMD_FROM`);
//! * `v1_checksum`: double SHA-256 of a payload (one full pass, one of 32 bytes);
//! * `translate/v1_to_v2|v2_to_v1`: one message through the encoder / decoder, framing,
//!   checksum and cipher included;
//! * `shaping/none|buckets`: a light client's flights (ping, inv, getheaders, headers, a
//!   filter, a block) through the encoder without and with bucket padding; the byte overhead
//!   of each strategy is printed beside the timing;
//! * `handshake/initiator`: key generation, ElligatorSwift ECDH, key schedule, version packet;
//!   `handshake/initiator_prefix16|32`: the same with a `--key-prefix` of 16 and 32 bytes
//!   (the encoding by the Rust inverse map instead of libsecp256k1's encoder);
//! * `bound/*`: the raw crates on the same sizes (`chacha20`, `poly1305`, one SHA-256 pass,
//!   and the secp256k1 work of one handshake): what the figures above cannot beat;
//! * `bip324_crate/*`: rust-bitcoin's `bip324` cipher on the same sizes, for comparison.
//!
//! Run: `cargo bench -p bip324-protocol --bench protocol`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bip324_e2e::v1::Message;
use bip324_protocol::aead::Engine;
use bip324_protocol::cipher::{LENGTH_LEN, PacketOpener, PacketSealer, packet_len};
use bip324_protocol::keys::EphemeralKey;
use bip324_protocol::v1;
use bip324_protocol::{
    Decoder, Encoder, Handshake, HandshakeEntropy, KeyPrefix, Magic, Pipe, Role,
};
use chacha20::cipher::{KeyIvInit, StreamCipher};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use poly1305::universal_hash::{KeyInit, UniversalHash};
use sha2::{Digest, Sha256};

const SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (1024, "1KiB"),
    (65536, "64KiB"),
    (4_000_000, "4MB"),
];
const MAGIC: Magic = Magic([0xf9, 0xbe, 0xb4, 0xd9]);
const KEYS: ([u8; 32], [u8; 32]) = ([1; 32], [2; 32]);

/// An unsealed packet holding `contents`.
fn unsealed_packet(contents: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; packet_len(contents.len())];
    packet[LENGTH_LEN + 1..][..contents.len()].copy_from_slice(contents);
    packet
}

fn cipher(c: &mut Criterion) {
    let mut group = c.benchmark_group("cipher");
    for (size, name) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut sealer = PacketSealer::new(KEYS.0, KEYS.1);
        let mut packet = vec![0u8; packet_len(size)];
        group.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| sealer.seal(black_box(&mut packet), &[], false));
        });
        // Packets are opened in sequence, as on a connection: a fresh opener per packet
        // would time the length cipher's first keystream block over and over.
        let batch = (16 << 20) / packet_len(size);
        let template = unsealed_packet(&vec![7u8; size]);
        group.bench_function(format!("open/{name}"), |b| {
            let (mut sealer, mut opener) = (
                PacketSealer::new(KEYS.0, KEYS.1),
                PacketOpener::new(KEYS.0, KEYS.1),
            );
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let mut packets = vec![template.clone(); left.min(batch)];
                    left -= packets.len();
                    for packet in &mut packets {
                        sealer.seal(packet, &[], false);
                    }
                    let started = Instant::now();
                    for packet in &mut packets {
                        black_box(opener.open_length(packet[..LENGTH_LEN].try_into().unwrap()));
                        opener.open(&[], &mut packet[LENGTH_LEN..]).unwrap();
                    }
                    timed += started.elapsed();
                }
                timed
            });
        });
    }
    group.finish();
}

fn aead_engines(c: &mut Criterion) {
    let mut group = c.benchmark_group("aead");
    for size in [64, 256, 512, 768, 1024, 1536, 2048, 4096] {
        group.throughput(Throughput::Bytes(size as u64));
        let mut text = vec![5u8; size];
        for (engine, name) in [(Engine::Portable, "portable"), (Engine::Simd, "simd")] {
            group.bench_function(format!("{name}/{size}B"), |b| {
                b.iter(|| engine.encrypt(&KEYS.0, [9; 12], &[], black_box(&mut text)));
            });
        }
    }
    group.finish();
}

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("v1_checksum");
    for (size, name) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let payload = vec![9u8; size];
        group.bench_function(name, |b| b.iter(|| v1::checksum(black_box(&payload))));
    }
    group.finish();
}

/// Feeds a whole input and drains the output, as the relay does.
fn run_through(pipe: &mut impl Pipe, input: &[u8]) -> usize {
    let (mut fed, mut out) = (0, 0);
    while fed < input.len() {
        let space = pipe.input_space();
        let n = space.len().min(input.len() - fed);
        space[..n].copy_from_slice(&input[fed..fed + n]);
        fed += n;
        pipe.commit_input(n, &mut |_| {}).unwrap();
        out += pipe.output().len();
        let len = pipe.output().len();
        pipe.consume_output(len);
    }
    out
}

/// A light client's traffic as flights of one message each, smallest to largest.
fn light_client_flights() -> Vec<Vec<u8>> {
    [
        ("ping", 8),
        ("pong", 8),
        ("inv", 37),
        ("getdata", 37),
        ("getheaders", 1029),
        ("getcfilters", 37),
        ("tx", 250),
        ("cfilter", 5_000),
        ("headers", 162_001),
        ("block", 1_500_000),
    ]
    .iter()
    .map(|(command, len)| Message::new(command, vec![3u8; *len]).to_wire(MAGIC.0))
    .collect()
}

fn shaping(c: &mut Criterion) {
    let mut group = c.benchmark_group("shaping");
    let flights = light_client_flights();
    let v1: usize = flights.iter().map(Vec::len).sum();
    group.throughput(Throughput::Bytes(v1 as u64));
    for (name, padded) in [("none", false), ("buckets", true)] {
        let mut encoder = Encoder::new(MAGIC, PacketSealer::new(KEYS.0, KEYS.1));
        if padded {
            encoder.pad_flights_to_buckets();
        }
        let wire: usize = flights.iter().map(|f| run_through(&mut encoder, f)).sum();
        eprintln!(
            "shaping/{name}: {v1} bytes of v1 messages become {wire} on the wire ({:+.1}%)",
            (wire as f64 / v1 as f64 - 1.0) * 100.0
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                for flight in &flights {
                    run_through(&mut encoder, black_box(flight));
                }
            });
        });
    }
    group.finish();
}

fn translate(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate");
    for (size, name) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let frame = Message::new("block", vec![5u8; size]).to_wire(MAGIC.0);
        let mut encoder = Encoder::new(MAGIC, PacketSealer::new(KEYS.0, KEYS.1));
        group.bench_function(format!("v1_to_v2/{name}"), |b| {
            b.iter(|| run_through(&mut encoder, black_box(&frame)));
        });
        // The decoder's first packet is the peer's version packet.
        let mut sealer = PacketSealer::new(KEYS.0, KEYS.1);
        let mut version = unsealed_packet(&[]);
        sealer.seal(&mut version, &[], false);
        let mut contents = vec![2u8]; // "block"
        contents.extend(vec![5u8; size]);
        let mut message = unsealed_packet(&contents);
        sealer.seal(&mut message, &[], false);
        group.bench_function(format!("v2_to_v1/{name}"), |b| {
            b.iter_batched_ref(
                || {
                    let mut decoder =
                        Decoder::new(MAGIC, PacketOpener::new(KEYS.0, KEYS.1), Vec::new());
                    run_through(&mut decoder, &version);
                    decoder
                },
                |decoder| run_through(decoder, black_box(&message)),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let responder = EphemeralKey::new([0x77; 32], [0x11; 32])
        .unwrap()
        .encoding();
    // A prefixed key takes a random number of inverse-map attempts (and, at 32 bytes, of
    // keys): fresh entropy each iteration averages over them.
    let prefixes = [
        ("initiator", KeyPrefix::NONE),
        (
            "initiator_prefix16",
            KeyPrefix::new(b"GET / HTTP/1.1\r\n").unwrap(),
        ),
        ("initiator_prefix32", KeyPrefix::new(&[0x47; 32]).unwrap()),
    ];
    for (name, prefix) in prefixes {
        let mut n = 0u64;
        c.bench_function(&format!("handshake/{name}"), |b| {
            b.iter(|| {
                n += 1;
                let mut entropy = HandshakeEntropy {
                    secret_key: [0x42; 32],
                    aux_rand: [0x24; 32],
                    garbage: Vec::new(),
                };
                entropy.secret_key[..8].copy_from_slice(&n.to_le_bytes());
                entropy.aux_rand[..8].copy_from_slice(&n.to_le_bytes());
                let (initiator, first) =
                    Handshake::new_with_prefix(Role::Initiator, MAGIC, &prefix, entropy).unwrap();
                let mut reply = Vec::new();
                let _ = initiator
                    .receive(black_box(&responder), &mut reply, &mut |_| {})
                    .unwrap();
                (first, reply)
            });
        });
    }
}

fn bound(c: &mut Criterion) {
    let mut group = c.benchmark_group("bound");
    for (size, name) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut data = vec![3u8; size];
        group.bench_function(format!("chacha20/{name}"), |b| {
            b.iter(|| {
                let mut stream = chacha20::ChaCha20::new(&[1u8; 32].into(), &[0u8; 12].into());
                stream.apply_keystream(black_box(&mut data));
            });
        });
        group.bench_function(format!("poly1305/{name}"), |b| {
            b.iter(|| {
                let mut mac = poly1305::Poly1305::new(&[1u8; 32].into());
                mac.update_padded(black_box(&data));
                mac.finalize()
            });
        });
        group.bench_function(format!("sha256/{name}"), |b| {
            b.iter(|| Sha256::digest(black_box(&data)));
        });
    }
    // The elliptic-curve work of one initiator handshake: key and encoding, then ECDH.
    let responder = secp256k1::ellswift::ElligatorSwift::from_array(
        EphemeralKey::new([0x77; 32], [0x11; 32])
            .unwrap()
            .encoding(),
    );
    group.throughput(Throughput::Elements(1));
    group.bench_function("secp256k1/handshake", |b| {
        b.iter(|| {
            let secret = secp256k1::SecretKey::from_secret_bytes([0x42; 32]).unwrap();
            let ours = secp256k1::ellswift::ElligatorSwift::from_seckey(secret, Some([0x24; 32]));
            secp256k1::ellswift::ElligatorSwift::shared_secret(
                ours,
                black_box(responder),
                secret,
                secp256k1::ellswift::Party::Initiator,
            )
        });
    });
    group.finish();
}

fn bip324_crate(c: &mut Criterion) {
    let mut group = c.benchmark_group("bip324_crate");
    for (size, name) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let plaintext = vec![7u8; size];
        let (mut initiator, _) = bip324_pair();
        let mut packet = vec![0u8; bip324::OutboundCipher::encryption_buffer_len(size)];
        group.bench_function(format!("encrypt/{name}"), |b| {
            b.iter(|| {
                initiator
                    .outbound()
                    .encrypt(
                        black_box(&plaintext),
                        &mut packet,
                        bip324::PacketType::Genuine,
                        None,
                    )
                    .unwrap();
            });
        });
        group.bench_function(format!("decrypt/{name}"), |b| {
            b.iter_batched_ref(
                || {
                    let (mut initiator, responder) = bip324_pair();
                    let packet = initiator.outbound().encrypt_to_vec(
                        &plaintext,
                        bip324::PacketType::Genuine,
                        None,
                    );
                    (responder, packet)
                },
                |(responder, packet)| {
                    let len = responder
                        .inbound()
                        .decrypt_packet_len(packet[..3].try_into().unwrap());
                    black_box(len);
                    responder
                        .inbound()
                        .decrypt_in_place(&mut packet[3..], None)
                        .map(|(t, _)| t)
                        .unwrap()
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// Two `bip324` sessions that talk to each other, from the crate's own handshake.
fn bip324_pair() -> (bip324::CipherSession, bip324::CipherSession) {
    use bip324::{GarbageResult, Handshake, Initialized, ReceivedKey, Role, VersionResult};
    let mut keys = [[0u8; 64]; 2];
    let initiator = Handshake::<Initialized>::new(MAGIC.0, Role::Initiator).unwrap();
    let responder = Handshake::<Initialized>::new(MAGIC.0, Role::Responder).unwrap();
    let initiator = initiator.send_key(None, &mut keys[0]).unwrap();
    let responder = responder.send_key(None, &mut keys[1]).unwrap();
    let initiator = initiator.receive_key(keys[1]).unwrap();
    let responder = responder.receive_key(keys[0]).unwrap();
    let len = Handshake::<ReceivedKey>::send_version_len(None);
    let (mut to_responder, mut to_initiator) = (vec![0u8; len], vec![0u8; len]);
    let initiator = initiator.send_version(&mut to_responder, None).unwrap();
    let responder = responder.send_version(&mut to_initiator, None).unwrap();
    let finish = |handshake: Handshake<bip324::SentVersion>, bytes: &[u8]| {
        let GarbageResult::FoundGarbage {
            mut handshake,
            consumed_bytes,
        } = handshake.receive_garbage(bytes).unwrap()
        else {
            panic!("terminator in the bytes")
        };
        let rest = &bytes[consumed_bytes..];
        let len = handshake
            .decrypt_packet_len(rest[..3].try_into().unwrap())
            .unwrap();
        let mut packet = rest[3..3 + len].to_vec();
        let VersionResult::Complete { cipher } = handshake.receive_version(&mut packet).unwrap()
        else {
            panic!("a version packet")
        };
        cipher
    };
    (
        finish(initiator, &to_initiator),
        finish(responder, &to_responder),
    )
}

criterion_group!(
    benches,
    cipher,
    aead_engines,
    checksum,
    translate,
    shaping,
    handshake,
    bound,
    bip324_crate
);
criterion_main!(benches);
