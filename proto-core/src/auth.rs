//! The swarm key: an optional pre-shared secret that keeps nodes without it out of a swarm.
//!
//! # Handshake
//!
//! Every `Hello` carries a fresh random nonce. When a node is configured with a [`SwarmKey`]:
//!
//! 1. the opener sends `Hello` (its nonce); the acceptor answers `Hello` (its nonce);
//! 2. the opener sends `Auth` with `HMAC-SHA-256(key, "shoal swarm v1" || 'O' || opener nonce ||
//!    acceptor nonce)`;
//! 3. the acceptor checks it and only then answers with its own `Auth`
//!    (`... || 'A' || acceptor nonce || opener nonce`), which the opener checks.
//!
//! Nothing else is sent or accepted on the connection before both proofs are checked. An
//! acceptor that gets anything but a good proof answers `Refused(SwarmKey)` and closes, so a node
//! without the key learns nothing but its own rejection (and the acceptor's nonce). The acceptor
//! proves itself second so that it never computes a proof for a stranger that has not proved
//! itself; the side letter keeps a proof from being reflected back to the node that made it.
//!
//! # What it does not do
//!
//! The key authenticates the handshake, not the traffic after it: there is no encryption and
//! no per-message MAC. It keeps out nodes that do not know the key; it does not stop an attacker
//! on the network path (or one relaying a handshake between two members) from reading or
//! speaking on a connection. Use a VPN or similar where that matters.
//!
//! Nonces come from the node's random generator, seeded by the adapter: with a swarm key the seed
//! must come from a real entropy source, or a restarted node would repeat its nonces and a
//! recorded handshake could be replayed.

use hmac::{Hmac, KeyInit, Mac};
use rand_xoshiro::rand_core::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use sha2::Sha256;

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of a handshake proof (an HMAC-SHA-256 tag).
pub const PROOF_LEN: usize = 32;

/// A handshake nonce.
pub type Nonce = [u8; NONCE_LEN];
/// A handshake proof.
pub type Proof = [u8; PROOF_LEN];

/// Domain separation: a proof for this protocol can never be mistaken for another MAC made with
/// the same key.
const LABEL: &[u8] = b"shoal swarm v1";

/// A pre-shared swarm key (32 bytes). Every node of a swarm that uses one must be configured
/// with the same key; nodes without it are refused at the handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SwarmKey(pub [u8; 32]);

impl core::fmt::Debug for SwarmKey {
    // The key itself never goes to a log.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SwarmKey(..)")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for SwarmKey {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "SwarmKey(..)")
    }
}

/// Which end of a connection made a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Side {
    /// The end that opened the connection (it proves first).
    Opener,
    /// The end that accepted it.
    Acceptor,
}

impl Side {
    fn letter(self) -> u8 {
        match self {
            Side::Opener => b'O',
            Side::Acceptor => b'A',
        }
    }

    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Opener => Side::Acceptor,
            Side::Acceptor => Side::Opener,
        }
    }
}

/// A fresh nonce from the node's generator.
pub(crate) fn nonce(rng: &mut Xoshiro256PlusPlus) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut n);
    n
}

fn mac(key: &SwarmKey, side: Side, sender: &Nonce, receiver: &Nonce) -> Hmac<Sha256> {
    // HMAC takes a key of any length, so this cannot fail for a 32-byte key.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(LABEL);
    mac.update(&[side.letter()]);
    mac.update(sender);
    mac.update(receiver);
    mac
}

impl SwarmKey {
    /// The proof the end on `side` sends: over its own nonce, then the other end's.
    pub fn prove(&self, side: Side, own: &Nonce, theirs: &Nonce) -> Proof {
        let mut out = [0u8; PROOF_LEN];
        out.copy_from_slice(&mac(self, side, own, theirs).finalize().into_bytes());
        out
    }

    /// Whether `proof` is the one the remote, on side `remote`, should have sent: made over its
    /// nonce `theirs`, then ours. The comparison takes the same time wherever the bytes differ.
    pub fn verify(&self, remote: Side, theirs: &Nonce, own: &Nonce, proof: &Proof) -> bool {
        mac(self, remote, theirs, own).verify_slice(proof).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: SwarmKey = SwarmKey([7; 32]);

    #[test]
    fn a_proof_checks_only_with_the_same_key_side_and_nonces() {
        let (a, b) = ([1; NONCE_LEN], [2; NONCE_LEN]);
        let p = K.prove(Side::Opener, &a, &b);
        assert!(K.verify(Side::Opener, &a, &b, &p));
        assert!(!SwarmKey([8; 32]).verify(Side::Opener, &a, &b, &p));
        assert!(
            !K.verify(Side::Acceptor, &a, &b, &p),
            "reflected to the other side"
        );
        assert!(!K.verify(Side::Opener, &b, &a, &p), "nonces swapped");
        assert!(
            !K.verify(Side::Opener, &a, &[3; NONCE_LEN], &p),
            "another session"
        );
    }

    #[test]
    fn proof_is_hmac_sha256_over_label_side_and_nonces() {
        // RFC 2104 HMAC computed independently of the `hmac` crate, from sha2 alone.
        use sha2::Digest;
        let (a, b) = ([1; NONCE_LEN], [2; NONCE_LEN]);
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for i in 0..32 {
            ipad[i] ^= K.0[i];
            opad[i] ^= K.0[i];
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(LABEL)
            .chain_update([b'A'])
            .chain_update(a)
            .chain_update(b)
            .finalize();
        let outer = Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize();
        assert_eq!(K.prove(Side::Acceptor, &a, &b)[..], outer[..]);
    }
}
