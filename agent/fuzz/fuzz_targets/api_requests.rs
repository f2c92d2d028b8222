//! Arbitrary bytes as API request bodies, query strings and microversion headers: parsing must
//! answer Ok or a 400, never panic. Run: `cd agent/fuzz && cargo +nightly fuzz run api_requests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    scs_edge_agent::api::parse_request_bodies(data);
});
