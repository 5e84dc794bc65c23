//! Which addresses a webhook may reach: one table per family, transcribed from the IANA
//! special-purpose address registries (the single source of truth for the SSRF guard), plus
//! the two rules those registries leave to others:
//!
//! - IPv4: multicast (224.0.0.0/4, its own IANA registry) is never a webhook destination.
//! - IPv6: only the global unicast space (2000::/3, the IANA IPv6 address-space registry) is
//!   public; everything else (site-local fec0::/10, the IPv4-compatible and IPv4-translated
//!   forms under ::/8, multicast ff00::/8, ...) is reserved or local.
//!
//! An address is judged by the most specific registry entry that holds it (so 2001:3::/32,
//! globally reachable, stays open inside 2001::/23, which is not). An entry whose "Globally
//! Reachable" column is `N/A` (Teredo, 6to4, the 6to4 relay anycast) is refused. Two forms
//! carry an IPv4 address that decides instead: IPv4-mapped (`::ffff:a.b.c.d`) and the
//! well-known NAT64 prefix (`64:ff9b::a.b.c.d`); the embedded address is judged by the IPv4
//! table. 6to4 and Teredo also embed IPv4 addresses, but refusing them whole is simpler and
//! loses nothing a webhook needs.
//!
//! Registries as of 2025: <https://www.iana.org/assignments/iana-ipv4-special-registry> and
//! <https://www.iana.org/assignments/iana-ipv6-special-registry>. When IANA adds an entry, add
//! its row here: the table-driven test checks every row.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One row of a special-purpose registry.
#[derive(Debug, Clone, Copy)]
pub struct Entry<A> {
    pub block: A,
    pub prefix: u8,
    pub name: &'static str,
    /// The registry's "Globally Reachable" column; `N/A` is `false`.
    pub globally_reachable: bool,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8, name: &'static str, globally_reachable: bool) -> Entry<Ipv4Addr> {
    Entry { block: Ipv4Addr::new(a, b, c, d), prefix, name, globally_reachable }
}

const fn v6(segments: [u16; 8], prefix: u8, name: &'static str, globally_reachable: bool) -> Entry<Ipv6Addr> {
    let s = segments;
    Entry { block: Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), prefix, name, globally_reachable }
}

/// The IANA IPv4 Special-Purpose Address Registry, every row.
pub const IPV4_SPECIAL: &[Entry<Ipv4Addr>] = &[
    v4(0, 0, 0, 0, 8, "\"This network\" (RFC 791)", false),
    v4(0, 0, 0, 0, 32, "\"This host on this network\" (RFC 1122)", false),
    v4(10, 0, 0, 0, 8, "Private-Use (RFC 1918)", false),
    v4(100, 64, 0, 0, 10, "Shared Address Space (RFC 6598)", false),
    v4(127, 0, 0, 0, 8, "Loopback (RFC 1122)", false),
    v4(169, 254, 0, 0, 16, "Link Local (RFC 3927)", false),
    v4(172, 16, 0, 0, 12, "Private-Use (RFC 1918)", false),
    v4(192, 0, 0, 0, 24, "IETF Protocol Assignments (RFC 6890)", false),
    v4(192, 0, 0, 0, 29, "IPv4 Service Continuity Prefix (RFC 7335)", false),
    v4(192, 0, 0, 8, 32, "IPv4 dummy address (RFC 7600)", false),
    v4(192, 0, 0, 9, 32, "Port Control Protocol Anycast (RFC 7723)", true),
    v4(192, 0, 0, 10, 32, "Traversal Using Relays around NAT Anycast (RFC 8155)", true),
    v4(192, 0, 0, 170, 32, "NAT64/DNS64 Discovery (RFC 7050)", false),
    v4(192, 0, 0, 171, 32, "NAT64/DNS64 Discovery (RFC 7050)", false),
    v4(192, 0, 2, 0, 24, "Documentation (TEST-NET-1) (RFC 5737)", false),
    v4(192, 31, 196, 0, 24, "AS112-v4 (RFC 7535)", true),
    v4(192, 52, 193, 0, 24, "AMT (RFC 7450)", true),
    v4(192, 88, 99, 0, 24, "Deprecated (6to4 Relay Anycast) (RFC 7526)", false),
    v4(192, 88, 99, 2, 32, "6a44-relay anycast address (RFC 6751)", false),
    v4(192, 168, 0, 0, 16, "Private-Use (RFC 1918)", false),
    v4(192, 175, 48, 0, 24, "Direct Delegation AS112 Service (RFC 7534)", true),
    v4(198, 18, 0, 0, 15, "Benchmarking (RFC 2544)", false),
    v4(198, 51, 100, 0, 24, "Documentation (TEST-NET-2) (RFC 5737)", false),
    v4(203, 0, 113, 0, 24, "Documentation (TEST-NET-3) (RFC 5737)", false),
    v4(240, 0, 0, 0, 4, "Reserved (RFC 1112)", false),
    v4(255, 255, 255, 255, 32, "Limited Broadcast (RFC 8190, RFC 919)", false),
];

/// Not in the special-purpose registry, refused all the same.
pub const IPV4_MULTICAST: Entry<Ipv4Addr> = v4(224, 0, 0, 0, 4, "Multicast (RFC 5771)", false);

/// The well-known NAT64 prefix: globally reachable, but what it reaches is its embedded IPv4 address.
pub const NAT64_WELL_KNOWN: Entry<Ipv6Addr> =
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "IPv4-IPv6 Translat. (RFC 6052)", true);

/// The IANA IPv6 Special-Purpose Address Registry, every row.
pub const IPV6_SPECIAL: &[Entry<Ipv6Addr>] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "Loopback Address (RFC 4291)", false),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "Unspecified Address (RFC 4291)", false),
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped Address (RFC 4291)", false),
    NAT64_WELL_KNOWN,
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "IPv4-IPv6 Translat. (RFC 8215)", false),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "Discard-Only Address Block (RFC 6666)", false),
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, "Dummy IPv6 Prefix (RFC 9780)", false),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "IETF Protocol Assignments (RFC 2928)", false),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "TEREDO (RFC 4380, RFC 8190)", false),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128, "Port Control Protocol Anycast (RFC 7723)", true),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128, "Traversal Using Relays around NAT Anycast (RFC 8155)", true),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128, "DNS-SD Service Registration Protocol Anycast (RFC 9665)", true),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "Benchmarking (RFC 5180, RFC Errata 1752)", false),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "AMT (RFC 7450)", true),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, "AS112-v6 (RFC 7535)", true),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "Deprecated (previously ORCHID) (RFC 4843)", false),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2 (RFC 7343)", true),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28, "Drone Remote ID Protocol Entity Tags (DETs) Prefix (RFC 9374)", true),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "Documentation (RFC 3849)", false),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4 (RFC 3056)", false),
    v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48, "Direct Delegation AS112 Service (RFC 7534)", true),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "Documentation (RFC 9637)", false),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "Segment Routing (SRv6) SIDs (RFC 9602)", false),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "Unique-Local (RFC 4193, RFC 8190)", false),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "Link-Local Unicast (RFC 4291)", false),
];

/// The only IPv6 space that is public (IANA IPv6 address-space registry: Global Unicast).
pub const IPV6_GLOBAL_UNICAST: Entry<Ipv6Addr> =
    v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, "Global Unicast (RFC 4291)", true);

/// Whether `ip` is reachable on the public internet, per the tables above.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => is_public_v6(a),
    }
}

fn is_public_v4(addr: Ipv4Addr) -> bool {
    let bits = u32::from(addr);
    if holds(u32::from(IPV4_MULTICAST.block), IPV4_MULTICAST.prefix, bits, 32) {
        return false;
    }
    most_specific(IPV4_SPECIAL, |e| holds(u32::from(e.block), e.prefix, bits, 32)).is_none_or(|e| e.globally_reachable)
}

fn is_public_v6(addr: Ipv6Addr) -> bool {
    let bits = u128::from(addr);
    let in_block = |e: &Entry<Ipv6Addr>| holds(u128::from(e.block), e.prefix, bits, 128);
    // The two forms whose embedded IPv4 address is what gets connected to.
    if let Some(v4) = addr.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if in_block(&NAT64_WELL_KNOWN) {
        let [.., a, b, c, d] = addr.octets();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    if !in_block(&IPV6_GLOBAL_UNICAST) {
        return false;
    }
    most_specific(IPV6_SPECIAL, in_block).is_none_or(|e| e.globally_reachable)
}

/// The entry with the longest prefix among those `contains` accepts.
fn most_specific<A>(table: &[Entry<A>], contains: impl Fn(&Entry<A>) -> bool) -> Option<&Entry<A>> {
    table.iter().filter(|e| contains(e)).max_by_key(|e| e.prefix)
}

/// Whether the block `block/prefix` holds `addr` (both `width`-bit numbers in a u128).
fn holds(block: impl Into<u128>, prefix: u8, addr: impl Into<u128>, width: u32) -> bool {
    let shift = width - u32::from(prefix);
    // A /0 holds everything (and a shift by the full width would overflow).
    prefix == 0 || (block.into() ^ addr.into()) >> shift == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_v4(e: &Entry<Ipv4Addr>) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(e.block) | (u32::MAX.checked_shr(u32::from(e.prefix)).unwrap_or(0)))
    }

    fn last_v6(e: &Entry<Ipv6Addr>) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(e.block) | (u128::MAX.checked_shr(u32::from(e.prefix)).unwrap_or(0)))
    }

    #[test]
    fn the_first_and_last_address_of_every_non_global_ipv4_block_are_refused() {
        for e in IPV4_SPECIAL.iter().chain([&IPV4_MULTICAST]).filter(|e| !e.globally_reachable) {
            for addr in [e.block, last_v4(e)] {
                assert!(!is_public(addr.into()), "{addr} ({}) passed", e.name);
                // The same address written as IPv4-mapped IPv6, and behind the NAT64 prefix.
                assert!(!is_public(addr.to_ipv6_mapped().into()), "{addr} mapped ({}) passed", e.name);
                let [a, b, c, d] = addr.octets();
                let nat64 =
                    Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
                assert!(!is_public(nat64.into()), "{nat64} ({}) passed", e.name);
            }
        }
    }

    #[test]
    fn the_first_and_last_address_of_every_non_global_ipv6_block_are_refused() {
        for e in IPV6_SPECIAL.iter().filter(|e| !e.globally_reachable) {
            for addr in [e.block, last_v6(e)] {
                assert!(!is_public(addr.into()), "{addr} ({}) passed", e.name);
            }
        }
    }

    #[test]
    fn globally_reachable_blocks_pass() {
        for e in IPV4_SPECIAL.iter().filter(|e| e.globally_reachable) {
            assert!(is_public(e.block.into()), "{} ({})", e.block, e.name);
            assert!(is_public(last_v4(e).into()), "{} ({})", last_v4(e), e.name);
        }
        for e in IPV6_SPECIAL.iter().filter(|e| e.globally_reachable && e.block.segments()[0] != 0x64) {
            assert!(is_public(e.block.into()), "{} ({})", e.block, e.name);
            assert!(is_public(last_v6(e).into()), "{} ({})", last_v6(e), e.name);
        }
    }

    #[test]
    fn public_addresses_pass() {
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "223.255.255.255",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_forms_the_audit_found_open_are_refused() {
        for private in [
            // Local-use NAT64, 6to4 around 127.0.0.1, site-local, IPv4-translated, Teredo.
            "64:ff9b:1::7f00:1",
            "64:ff9b:1::808:808",
            "2002:7f00:1::1",
            "2002:808:808::1",
            "fec0::1",
            "::ffff:0:7f00:1",
            "::ffff:0:808:808",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            // IPv4-compatible (deprecated), multicast, other reserved IPv6 space.
            "::7f00:1",
            "::808:808",
            "ff02::1",
            "ff0e::1",
            "4000::1",
            "127.0.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.255",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }
}
