#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dingbridge_fuzzing::dingtalk_callback(data));
