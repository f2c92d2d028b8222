//! Nova microversion negotiation.
//!
//! Clients ask for a compute API version per request (`OpenStack-API-Version: compute 2.61`, or the
//! older `X-OpenStack-Nova-API-Version: 2.61`); no header means the base 2.1 behaviour, `latest`
//! means the newest we serve. Handlers branch on the negotiated version where response shapes
//! changed (e.g. the embedded flavor from 2.47), and every response names the version it speaks.

use super::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use std::fmt;

/// A compute API microversion, `2.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion {
    /// Major version; always 2.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

impl Microversion {
    /// The oldest version served: v2.1 without a header.
    pub const MIN: Self = Self { major: 2, minor: 1 };
    /// The newest version served.
    pub const MAX: Self = Self {
        major: 2,
        minor: 61,
    };

    /// `2.<minor>`.
    pub const fn v2(minor: u16) -> Self {
        Self { major: 2, minor }
    }

    /// Whether this request speaks at least `2.<minor>`.
    pub fn at_least(self, minor: u16) -> bool {
        self >= Self::v2(minor)
    }

    /// Reads the request's version from its headers.
    pub fn negotiate(headers: &HeaderMap) -> Result<Self, ApiError> {
        let requested = headers
            .get_all("openstack-api-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|item| {
                let mut parts = item.split_whitespace();
                (parts.next()?.eq_ignore_ascii_case("compute"))
                    .then(|| parts.next().unwrap_or("").to_owned())
            })
            .or_else(|| {
                headers
                    .get("x-openstack-nova-api-version")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_owned())
            });
        let Some(text) = requested else {
            return Ok(Self::MIN);
        };
        if text.eq_ignore_ascii_case("latest") {
            return Ok(Self::MAX);
        }
        let version = parse(&text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum."
            ))
        })?;
        if version < Self::MIN || version > Self::MAX {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "Version {version} is not supported by the API. Minimum is {} and maximum is {}.",
                    Self::MIN,
                    Self::MAX
                ),
            ));
        }
        Ok(version)
    }

    /// Adds the headers that tell the client which version answered.
    pub fn stamp(self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&format!("compute {self}")) {
            headers.insert("openstack-api-version", value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.to_string()) {
            headers.insert("x-openstack-nova-api-version", value);
        }
        headers.insert(
            axum::http::header::VARY,
            HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
        );
    }
}

fn parse(text: &str) -> Option<Microversion> {
    let (major, minor) = text.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some(Microversion {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn no_header_is_the_base_version_and_latest_the_newest() {
        assert_eq!(
            Microversion::negotiate(&HeaderMap::new()).expect("min"),
            Microversion::MIN
        );
        assert_eq!(
            Microversion::negotiate(&headers(&[("openstack-api-version", "compute latest")]))
                .expect("max"),
            Microversion::MAX
        );
    }

    #[test]
    fn both_header_styles_are_read_and_the_new_one_wins() {
        let v = Microversion::negotiate(&headers(&[
            ("openstack-api-version", "identity 3.1, compute 2.47"),
            ("x-openstack-nova-api-version", "2.10"),
        ]))
        .expect("version");
        assert_eq!(v, Microversion::v2(47));
        let v = Microversion::negotiate(&headers(&[("x-openstack-nova-api-version", "2.10")]))
            .expect("legacy");
        assert_eq!(v, Microversion::v2(10));
    }

    #[test]
    fn out_of_range_is_not_acceptable_and_garbage_a_bad_request() {
        let err = Microversion::negotiate(&headers(&[("openstack-api-version", "compute 2.999")]))
            .expect_err("too new");
        assert_eq!(err.status(), StatusCode::NOT_ACCEPTABLE);
        let err = Microversion::negotiate(&headers(&[("openstack-api-version", "compute 2.x")]))
            .expect_err("garbage");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let err = Microversion::negotiate(&headers(&[("openstack-api-version", "compute 3.0")]))
            .expect_err("major");
        assert_eq!(err.status(), StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn responses_are_stamped_with_the_version() {
        let mut map = HeaderMap::new();
        Microversion::v2(61).stamp(&mut map);
        assert_eq!(map["openstack-api-version"], "compute 2.61");
        assert_eq!(map["x-openstack-nova-api-version"], "2.61");
    }
}
