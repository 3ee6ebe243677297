//! A v1 regtest node that serves a generated chain to BIP-157 light clients: headers, filter
//! headers, filters and blocks, as Bitcoin Core does with `-blockfilterindex -peerblockfilters`.
//! It stands behind the v2 responder when a real light client (Kyoto) syncs through the proxy.
//! Messages are rust-bitcoin's codec; the chain is deterministic, so every run moves the same
//! messages.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bitcoin::bip158::{BlockFilter, FilterHash, FilterHeader};
use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use bitcoin::p2p::message_blockdata::Inventory;
use bitcoin::p2p::message_filter::{CFHeaders, CFilter};
use bitcoin::p2p::message_network::VersionMessage;
use bitcoin::p2p::{Address, Magic, ServiceFlags};
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Witness, absolute, transaction,
};
use sha2::{Digest, Sha256};

use crate::server::Server;
use crate::v1::{REGTEST_MAGIC, read_message};

/// Bitcoin Core's limit per `headers` message.
const MAX_HEADERS: usize = 2000;

/// A chain on regtest's genesis with its BIP-158 basic filters and filter headers.
pub struct Chain {
    pub blocks: Vec<Block>,
    filters: Vec<BlockFilter>,
    filter_headers: Vec<FilterHeader>,
    heights: HashMap<BlockHash, usize>,
}

impl Chain {
    /// `tip` blocks after genesis, each with 1 to 40 transactions that spend earlier outputs
    /// and pay fresh P2WPKH and P2TR scripts; the block at `watched.1` also pays `watched.0`.
    pub fn generate(tip: usize, watched: (&ScriptBuf, usize)) -> Chain {
        let mut chain = Chain {
            blocks: Vec::with_capacity(tip + 1),
            filters: Vec::with_capacity(tip + 1),
            filter_headers: Vec::with_capacity(tip + 1),
            heights: HashMap::new(),
        };
        let mut coins = Coins::default();
        let genesis = genesis_block(Network::Regtest);
        coins.add(&genesis.txdata[0]);
        chain.push(genesis, &mut coins);
        for height in 1..=tip {
            let mut txdata = vec![coins.coinbase(height)];
            for _ in 0..1 + coins.draw(40) {
                let pays_watched = height == watched.1 && txdata.len() == 1;
                if let Some(tx) = coins.spend(pays_watched.then_some(watched.0)) {
                    txdata.push(tx);
                }
            }
            let prev = chain.blocks[height - 1].block_hash();
            chain.push(mine(prev, height, txdata), &mut coins);
        }
        chain
    }

    fn push(&mut self, block: Block, coins: &mut Coins) {
        let filter = BlockFilter::new_script_filter(&block, |outpoint| {
            coins
                .spent
                .get(outpoint)
                .cloned()
                .ok_or(bitcoin::bip158::Error::UtxoMissing(*outpoint))
        })
        .expect("every spent coin is known");
        let previous = self
            .filter_headers
            .last()
            .copied()
            .unwrap_or_else(FilterHeader::all_zeros);
        self.filter_headers.push(filter.filter_header(&previous));
        self.filters.push(filter);
        self.heights.insert(block.block_hash(), self.blocks.len());
        self.blocks.push(block);
    }

    pub fn tip(&self) -> (usize, BlockHash) {
        let height = self.blocks.len() - 1;
        (height, self.blocks[height].block_hash())
    }

    /// What a node answers to `request`: nothing for what light clients need no answer to.
    fn answer(&self, request: &NetworkMessage) -> Vec<NetworkMessage> {
        match request {
            NetworkMessage::Version(_) => vec![self.version(), NetworkMessage::Verack],
            NetworkMessage::Ping(nonce) => vec![NetworkMessage::Pong(*nonce)],
            NetworkMessage::GetHeaders(get) => {
                let fork = get
                    .locator_hashes
                    .iter()
                    .find_map(|hash| self.heights.get(hash))
                    .copied()
                    .unwrap_or(0);
                // Up to the stop hash when it lies ahead, else to the tip; 2,000 at most.
                let last = self
                    .heights
                    .get(&get.stop_hash)
                    .copied()
                    .filter(|&stop| stop > fork)
                    .unwrap_or(self.tip().0)
                    .min(fork + MAX_HEADERS);
                let headers = self.blocks[fork + 1..=last]
                    .iter()
                    .map(|block| block.header)
                    .collect();
                vec![NetworkMessage::Headers(headers)]
            }
            NetworkMessage::GetCFHeaders(get) => {
                let Some(range) = self.range(get.start_height, &get.stop_hash) else {
                    return Vec::new();
                };
                let previous_filter_header = match range.start() {
                    0 => FilterHeader::all_zeros(),
                    start => self.filter_headers[start - 1],
                };
                let filter_hashes = range
                    .map(|height| FilterHash::hash(self.filters[height].content.as_slice()))
                    .collect();
                vec![NetworkMessage::CFHeaders(CFHeaders {
                    filter_type: 0,
                    stop_hash: get.stop_hash,
                    previous_filter_header,
                    filter_hashes,
                })]
            }
            NetworkMessage::GetCFilters(get) => self
                .range(get.start_height, &get.stop_hash)
                .into_iter()
                .flatten()
                .map(|height| {
                    NetworkMessage::CFilter(CFilter {
                        filter_type: 0,
                        block_hash: self.blocks[height].block_hash(),
                        filter: self.filters[height].content.clone(),
                    })
                })
                .collect(),
            NetworkMessage::GetData(inventory) => inventory
                .iter()
                .filter_map(|item| match item {
                    Inventory::Block(hash) | Inventory::WitnessBlock(hash) => {
                        self.heights.get(hash)
                    }
                    _ => None,
                })
                .map(|&height| NetworkMessage::Block(self.blocks[height].clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Heights `start..=height(stop)`, at most 2,000 (Core's limit for filter headers; it
    /// serves at most 1,000 filters, which Kyoto never exceeds); `None` for a bad range.
    fn range(&self, start: u32, stop: &BlockHash) -> Option<std::ops::RangeInclusive<usize>> {
        let (start, stop) = (start as usize, *self.heights.get(stop)?);
        (start <= stop && stop - start < MAX_HEADERS).then_some(start..=stop)
    }

    fn version(&self) -> NetworkMessage {
        let nowhere = Address::new(&SocketAddr::from(([0, 0, 0, 0], 0)), ServiceFlags::NONE);
        let mut version = VersionMessage::new(
            ServiceFlags::NETWORK | ServiceFlags::WITNESS | ServiceFlags::COMPACT_FILTERS,
            1_700_000_000,
            nowhere.clone(),
            nowhere,
            0x0b17_c4a1,
            "/e2e-chain-node:0.1/".into(),
            self.tip().0 as i32,
        );
        version.version = 70016;
        NetworkMessage::Version(version)
    }
}

/// Serves `chain` to every peer that connects, each on its own thread.
pub fn spawn_chain_node(listener: TcpListener, chain: std::sync::Arc<Chain>) -> io::Result<Server> {
    Server::spawn(listener, move |stream| {
        let _ = serve(stream, &chain);
    })
}

fn serve(stream: TcpStream, chain: &Chain) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let magic = Magic::from_bytes(REGTEST_MAGIC);
    while let Some(message) = read_message(&mut reader, REGTEST_MAGIC)? {
        let raw: RawNetworkMessage = deserialize(&message.to_wire(REGTEST_MAGIC))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        for answer in chain.answer(raw.payload()) {
            writer.write_all(&serialize(&RawNetworkMessage::new(magic, answer)))?;
        }
    }
    Ok(())
}

/// Mines a regtest block: about two tries per block at its minimum difficulty.
fn mine(prev_blockhash: BlockHash, height: usize, txdata: Vec<Transaction>) -> Block {
    let mut block = Block {
        header: Header {
            version: BlockVersion::from_consensus(0x2000_0000),
            prev_blockhash,
            merkle_root: bitcoin::TxMerkleNode::all_zeros(),
            time: 1_296_688_602 + 600 * height as u32,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
        },
        txdata,
    };
    block.header.merkle_root = block.compute_merkle_root().expect("a coinbase");
    while block.header.validate_pow(block.header.target()).is_err() {
        block.header.nonce += 1;
    }
    block
}

/// The chain's spendable outputs, and the script of every output spent so far (the filters
/// hold spent scripts too).
#[derive(Default)]
struct Coins {
    unspent: VecDeque<(OutPoint, ScriptBuf)>,
    spent: HashMap<OutPoint, ScriptBuf>,
    counter: u64,
}

impl Coins {
    /// A deterministic pseudo-random 32 bytes per call.
    fn next_bytes(&mut self) -> [u8; 32] {
        self.counter += 1;
        Sha256::digest(self.counter.to_le_bytes()).into()
    }

    fn draw(&mut self, below: usize) -> usize {
        self.next_bytes()[0] as usize % below
    }

    /// A fresh P2WPKH or P2TR script.
    fn script(&mut self) -> ScriptBuf {
        let bytes = self.next_bytes();
        if bytes[31] & 1 == 0 {
            ScriptBuf::from_bytes([&[0x00, 0x14], &bytes[..20]].concat())
        } else {
            ScriptBuf::from_bytes([&[0x51, 0x20], &bytes[..]].concat())
        }
    }

    fn add(&mut self, tx: &Transaction) {
        let txid = tx.compute_txid();
        for (vout, out) in tx.output.iter().enumerate() {
            let outpoint = OutPoint::new(txid, vout as u32);
            self.unspent
                .push_back((outpoint, out.script_pubkey.clone()));
        }
    }

    fn coinbase(&mut self, height: usize) -> Transaction {
        let mut height_push = vec![4];
        height_push.extend_from_slice(&(height as u32).to_le_bytes());
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(height_push),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(5_000_000_000),
                script_pubkey: self.script(),
            }],
        };
        self.add(&tx);
        tx
    }

    /// A transaction that spends the oldest unspent output into two (one paying `to` when
    /// given), with a signature-sized input script.
    fn spend(&mut self, to: Option<&ScriptBuf>) -> Option<Transaction> {
        let (outpoint, script) = self.unspent.pop_front()?;
        self.spent.insert(outpoint, script);
        let signature = [&self.next_bytes()[..], &self.next_bytes()[..]].concat();
        let first = to.cloned().unwrap_or_else(|| self.script());
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: outpoint,
                script_sig: ScriptBuf::from_bytes([&[0x40][..], &signature].concat()),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![
                TxOut {
                    value: Amount::from_sat(10_000),
                    script_pubkey: first,
                },
                TxOut {
                    value: Amount::from_sat(20_000),
                    script_pubkey: self.script(),
                },
            ],
        };
        self.add(&tx);
        Some(tx)
    }
}
