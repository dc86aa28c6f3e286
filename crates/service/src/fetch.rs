//! Downloads a `video_url` or `bg_image_url` for a worker: streamed to a file, with a size cap, a
//! time limit, and no way to reach private, loopback or link-local addresses unless the operator
//! allows it. Every redirect hop is checked again, and the connection goes to the very address
//! that was checked (no second DNS answer can slip in between). Webhook deliveries connect
//! through the same [`pinned_client`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

const MAX_REDIRECTS: usize = 5;

/// Why a download failed; `code` goes into the job's `error_code`.
#[derive(Debug)]
pub struct FetchError {
    /// `url_not_allowed`, `input_too_large` or `fetch_failed`.
    pub code: &'static str,
    /// For the job's `error`.
    pub message: String,
    /// This host failed (writing the download to its disk), not the URL.
    pub local: bool,
}

impl FetchError {
    fn new(code: &'static str, message: impl Into<String>) -> FetchError {
        FetchError { code, message: message.into(), local: false }
    }
}

/// Download settings.
#[derive(Clone)]
pub struct Fetcher {
    /// Allow private, loopback and link-local addresses.
    pub allow_private: bool,
    /// Largest body accepted.
    pub max_bytes: u64,
    /// Time limit for the whole download.
    pub timeout: Duration,
}

/// True for addresses on the public internet. Special-purpose ranges are not, and an IPv6
/// address that carries an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by that.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, IETF protocol assignments
                || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 192.88.99.0/24, 6to4 relays
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let v4 = |hi: u16, lo: u16| IpAddr::V4(std::net::Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(mapped));
            }
            match s {
                // ::a.b.c.d (IPv4-compatible, deprecated), ::1 and ::: nothing public starts so.
                [0, 0, 0, 0, 0, 0, _, _] => false,
                // 64:ff9b::/96, NAT64: the IPv4 address it translates to.
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public(v4(hi, lo)),
                // 64:ff9b:1::/48, local-use NAT64.
                [0x64, 0xff9b, 1, ..] => false,
                // 2002::/16, 6to4: the IPv4 address in bits 16-47.
                [0x2002, hi, lo, ..] => is_public(v4(hi, lo)),
                // 2001::/32 Teredo (the IPv4 inside is obfuscated) and 2001:db8::/32 documentation.
                [0x2001, 0, ..] | [0x2001, 0xdb8, ..] => false,
                // fec0::/10, site-local (deprecated, but still routed inside some networks).
                [first, ..] if first & 0xffc0 == 0xfec0 => false,
                // 100::/64, discard-only.
                [0x100, 0, 0, 0, ..] => false,
                _ => {
                    !(v6.is_loopback()
                        || v6.is_unspecified()
                        || v6.is_multicast()
                        || v6.is_unique_local()
                        || v6.is_unicast_link_local())
                }
            }
        }
    }
}

/// Refuses a URL whose host is a literal non-public address (checked when a job is created;
/// names are checked when they are resolved, at download time).
pub fn check_literal_host(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let Ok(parsed) = url::Url::parse(url) else { return Ok(()) };
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") => {
            return Err("points at this machine (localhost); set CLEARBG_ALLOW_PRIVATE_URLS=1 to allow it".into())
        }
        _ => return Ok(()),
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "points at a private, loopback or link-local address ({ip}); set CLEARBG_ALLOW_PRIVATE_URLS=1 to allow it"
        ))
    }
}

/// An HTTP client builder for one request to `url`: the host is resolved and checked here, and
/// the connection is pinned to the checked address (no second DNS answer can slip in between).
/// Redirects are not followed, so that each hop is checked again by whoever follows them.
/// Shared by downloads and webhook deliveries, so both obey the same address rules.
pub async fn pinned_client(url: &url::Url, allow_private: bool) -> Result<reqwest::ClientBuilder, FetchError> {
    let addr = resolve(url, allow_private).await?;
    let host = url.host_str().unwrap_or_default();
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, addr)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("clearbg/", env!("CARGO_PKG_VERSION"))))
}

/// The address to connect to for `url`, refused when any of its host's addresses is private,
/// loopback or link-local (unless allowed).
async fn resolve(url: &url::Url, allow_private: bool) -> Result<SocketAddr, FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::new("url_not_allowed", format!("{url}: only http and https URLs are fetched")));
    }
    check_literal_host(url.as_str(), allow_private)
        .map_err(|m| FetchError::new("url_not_allowed", format!("{url} {m}")))?;
    let host = url.host_str().ok_or_else(|| FetchError::new("fetch_failed", format!("{url} has no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| FetchError::new("fetch_failed", format!("could not resolve {host}: {e}")))?
        .collect();
    // Every answer must be allowed: otherwise a name with one public and one private address
    // would be a way in.
    if let Some(bad) = addrs.iter().find(|a| !allow_private && !is_public(a.ip())) {
        return Err(FetchError::new(
            "url_not_allowed",
            format!(
                "{host} resolves to a private, loopback or link-local address ({}); set CLEARBG_ALLOW_PRIVATE_URLS=1 to allow it",
                bad.ip()
            ),
        ));
    }
    addrs.into_iter().next().ok_or_else(|| FetchError::new("fetch_failed", format!("{host} has no address")))
}

impl Fetcher {
    /// Downloads `url` to `dest`; returns the number of bytes.
    pub async fn download(&self, url: &str, dest: &Path) -> Result<u64, FetchError> {
        match tokio::time::timeout(self.timeout, self.download_inner(url, dest)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::new(
                "fetch_failed",
                format!("downloading {url} took longer than {}", humantime::format_duration(self.timeout)),
            )),
        }
    }

    async fn download_inner(&self, url: &str, dest: &Path) -> Result<u64, FetchError> {
        let mut current =
            url::Url::parse(url).map_err(|e| FetchError::new("fetch_failed", format!("{url} is not a URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let client = pinned_client(&current, self.allow_private)
                .await?
                .read_timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| FetchError::new("fetch_failed", format!("HTTP client: {e}")))?;
            let response = client
                .get(current.clone())
                .send()
                .await
                .map_err(|e| FetchError::new("fetch_failed", format!("could not download {current}: {e}")))?;
            let status = response.status();
            if status.is_redirection() {
                let location =
                    response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).ok_or_else(
                        || FetchError::new("fetch_failed", format!("{current} redirected without a Location")),
                    )?;
                current = current
                    .join(location)
                    .map_err(|e| FetchError::new("fetch_failed", format!("bad redirect from {current}: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::new("fetch_failed", format!("{current} answered HTTP {}", status.as_u16())));
            }
            if response.content_length().is_some_and(|len| len > self.max_bytes) {
                return Err(self.too_large(&current));
            }
            return self.save(response, dest, &current).await;
        }
        Err(FetchError::new("fetch_failed", format!("{url} redirected more than {MAX_REDIRECTS} times")))
    }

    async fn save(&self, response: reqwest::Response, dest: &Path, url: &url::Url) -> Result<u64, FetchError> {
        let io = |e: std::io::Error| FetchError {
            local: true,
            ..FetchError::new("fetch_failed", format!("writing the download: {e}"))
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut stream = response.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| FetchError::new("fetch_failed", format!("download of {url} broke off: {e}")))?;
            total += chunk.len() as u64;
            if total > self.max_bytes {
                return Err(self.too_large(url));
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(total)
    }

    fn too_large(&self, url: &url::Url) -> FetchError {
        FetchError::new("input_too_large", format!("{url} is larger than the {} byte limit", self.max_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "fec0::1",
            "feff::1",
            "100::1",
            "192.0.0.8",
            "192.0.0.170",
            "192.88.99.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "192.0.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_early() {
        assert!(check_literal_host("http://127.0.0.1:8080/a.mp4", false).is_err());
        assert!(check_literal_host("http://[::1]/a.mp4", false).is_err());
        assert!(check_literal_host("http://localhost/a.mp4", false).is_err());
        assert!(check_literal_host("http://127.0.0.1/a.mp4", true).is_ok());
        assert!(check_literal_host("https://example.com/a.mp4", false).is_ok());
    }
}
