//! Real User-Agents of the kinds a second public corpus found misread, and the look-alikes
//! and everyday browsers whose reading must not change, each with the OS, browser and
//! versions Grayline gives it. `src/useragent/samples.rs` holds the common mix that the demo
//! traffic, the benchmarks and the console send; these are the rarer strings that decide
//! whether the classifier agrees with a labelled corpus beyond it.
//!
//! Every string is copied unchanged from the public source named above its group:
//! - uap-core (Apache-2.0): https://github.com/ua-parser/uap-core, `tests/` and
//!   `test_resources/pgts_browser_list.yaml`;
//! - Matomo's device-detector fixtures: https://github.com/matomo-org/device-detector,
//!   `Tests/fixtures/`;
//! - ua-parser-js's tests: https://github.com/faisalman/ua-parser-js, `test/data/ua/`;
//! - OpenHarmony's documentation of its default User-Agent:
//!   https://github.com/openharmony/docs/blob/master/en/application-dev/web/web-default-userAgent.md;
//! - User-Agents a developer recorded from real devices, lowercased by the page that read
//!   them: https://github.com/chenglin0006/liaoDemo/blob/master/src/util/UA.md;
//! - the examples of `isHarmony` in `@esdora/kit`:
//!   https://esdora.js.org/kit/reference/validate/is-harmony;
//! - a collection of Chinese browsers' User-Agents:
//!   https://github.com/bb33bb/Notes/blob/master/爬虫/User-Agent收集.md.

use grayline_routing::useragent::{Browser, Os, classify};

/// (User-Agent, OS, OS version, browser, browser version).
type Labelled = (&'static str, Os, &'static str, Browser, &'static str);

/// Classifies every case and reports all disagreements at once.
fn check(cases: &[Labelled]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(ua, os, os_version, browser, browser_version)| {
            let got = classify(ua);
            let want = (os, os_version, browser, browser_version);
            let have = (
                got.os,
                got.os_version.to_string(),
                got.browser,
                got.browser_version.to_string(),
            );
            let same = (have.0, have.1.as_str(), have.2, have.3.as_str()) == want;
            (!same).then(|| format!("{ua}\n   want {want:?}\n   have {have:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// WeChat in a lowercased header, and over the engine of Tencent's it renders with, which
/// names itself too (`MQQBrowser/` on Android, `QQBrowser/` on Windows).
#[test]
fn wechat_in_any_case_and_over_tencents_engine() {
    check(&[
        // liaoDemo, lowercased.
        (
            "mozilla/5.0 (linux; android 11; mi 10 pro build/rkq1.200826.002; wv) applewebkit/537.36 (khtml, like gecko) version/4.0 chrome/77.0.3865.120 mqqbrowser/6.2 tbs/045617 mobile safari/537.36 mmwebid/7489 micromessenger/8.0.6.1900(0x280006a1) process/tools wechat/arm64 weixin nettype/wifi language/zh_cn abi/arm64",
            Os::Android,
            "11",
            Browser::Wechat,
            "8.0.6.1900",
        ),
        (
            "mozilla/5.0 (iphone; cpu iphone os 14_6 like mac os x) applewebkit/605.1.15 (khtml, like gecko) mobile/15e148 micromessenger/8.0.7(0x18000722) nettype/wifi language/zh_cn",
            Os::Ios,
            "14.6",
            Browser::Wechat,
            "8.0.7",
        ),
        (
            "mozilla/5.0 (ipad; cpu os 14_6 like mac os x) applewebkit/605.1.15 (khtml, like gecko) mobile/15e148 micromessenger/8.0.7(0x18000722) nettype/wifi language/zh_cn",
            Os::Ipados,
            "14.6",
            Browser::Wechat,
            "8.0.7",
        ),
        (
            "mozilla/5.0 (windows nt 10.0; wow64) applewebkit/537.36 (khtml, like gecko) chrome/53.0.2785.116 safari/537.36 qbcore/4.0.1326.400 qqbrowser/9.0.2524.400 mozilla/5.0 (windows nt 6.1; wow64) applewebkit/537.36 (khtml, like gecko) chrome/53.0.2875.116 safari/537.36 nettype/wifi micromessenger/7.0.20.1781(0x6700143b) windowswechat(0x63010200)",
            Os::Windows,
            "10",
            Browser::Wechat,
            "7.0.20.1781",
        ),
        // ua-parser-js.
        (
            "Mozilla/5.0 (Linux; U; Android 5.1; zh-cn; Lenovo K50-t5 Build/LMY47D) AppleWebKit/533.1 (KHTML, like Gecko)Version/4.0 MQQBrowser/5.4 TBS/025478 Mobile Safari/533.1 MicroMessenger/6.3.5.50_r1573191.640 NetType/WIFI Language/zh_CN",
            Os::Android,
            "5.1",
            Browser::Wechat,
            "6.3.5.50",
        ),
        (
            "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/39.0.2171.95 Safari/537.36 MicroMessenger/6.5.2.501 NetType/WIFI WindowsWechat QBCore/3.43.901.400 QQBrowser/9.0.2524.400",
            Os::Windows,
            "7",
            Browser::Wechat,
            "6.5.2.501",
        ),
        // device-detector.
        (
            "Mozilla/5.0 (Linux; Android 8.1; PBAM00 Build/OPM1.171019.026; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/57.0.2987.132 MQQBrowser/6.2 TBS/044208 Mobile Safari/537.36 MicroMessenger/6.7.2.1340(0x2607023A) NetType/WIFI Language/zh_CN",
            Os::Android,
            "8.1",
            Browser::Wechat,
            "6.7.2.1340",
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 4.3; zh-cn; SM-N9008V Build/JSS15J) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30 MicroMessenger/5.2.380",
            Os::Android,
            "4.3",
            Browser::Wechat,
            "5.2.380",
        ),
        // uap-core.
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/107.0.0.0 Safari/537.36 NetType/WIFI MicroMessenger/6.8.0(0x16080000) MacWechat/3.8.7(0x13080710) XWEB/1191",
            Os::Macos,
            "10.15.7",
            Browser::Wechat,
            "6.8.0",
        ),
    ]);
}

/// HarmonyOS phones say "Android" in the first comment and name the system elsewhere; a
/// Huawei build id or `HMSCore` alone does not make one (Huawei's Android phones send them).
#[test]
fn harmonyos_wherever_it_names_itself() {
    check(&[
        // device-detector: in a later comment (Baidu's app), and DingTalk's `Hmos/1`.
        (
            "Mozilla/5.0 (Linux; Android 12; LNA-AL00 Build/HUAWEILNA-AL00; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/97.0.4692.98 Mobile Safari/537.36 T7/13.32 BDOS/1.0 (HarmonyOS 3.0.0) SP-engine/2.70.0 baiduboxapp/13.32.5.10 (Baidu; P1 12) NABar",
            Os::Harmonyos,
            "3.0.0",
            Browser::Baidu,
            "13.32.5.10",
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 10; zh-CN; BLM-00 Build/HUAWEIBLM-00) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 UWS/3.22.1.228 Mobile Safari/537.36 AliApp(DingTalk/6.5.30) com.alibaba.android.rimet/25293052 Channel/227200 language/zh-CN abi/64 Pad/APad Hmos/1 UT4Aplus/0.2.25 colorScheme/light",
            Os::Harmonyos,
            "",
            Browser::Chrome,
            "69.0.3497.100",
        ),
        // ua-parser-js: as the build, in a later comment, as `HarmonyOS/`, in the comment.
        (
            "Mozilla/5.0 (Linux; Android 12; Huawei P60 Pro Build/HarmonyOS 3.1.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/111.1.6136.139 Mobile Safari/537.36 OPR/111.11",
            Os::Harmonyos,
            "3.1.0",
            Browser::Opera,
            "111.11",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; STK-AL00 Build/HUAWEISTK-AL00; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/88.0.4324.93 Mobile Safari/537.36 BDOS/1.0 (HarmonyOS 2.2.0) SP-engine/2.72.0 baiduboxapp/13.34.5.10 (Baidu; P1 10) NABar/1.0",
            Os::Harmonyos,
            "2.2.0",
            Browser::Baidu,
            "13.34.5.10",
        ),
        (
            "Mozilla/5.0 (Linux; Android 12; HarmonyOS/4.0.3.601; JAD-AL50; HMSCore/6.13.0.320 Build/AP31.240223.016.A3; x64; ARM64) AppleWebKit/537.36 (KHTML, like Gecko) HuaweiBrowser/14.0.7.302 Mobile Safari/537.36",
            Os::Harmonyos,
            "4.0.3.601",
            Browser::HuaweiBrowser,
            "14.0.7.302",
        ),
        (
            "Mozilla/5.0 (Android 12; HarmonyOS 4.0.0.118; OXF-AN00 Build/HUAWEIOXF-AN00; HMSCore 6.13.0.302; wv) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Mobile Safari/537.36 EdgA/125.0.0.0 Language/zh_TW ABI/arm64-v8a",
            Os::Harmonyos,
            "4.0.0.118",
            Browser::Edge,
            "125.0.0.0",
        ),
        // @esdora/kit: a `HarmonyOS/` token after an Android comment, and Huawei Browser on
        // HarmonyOS 5, which no longer says "Android".
        (
            "Mozilla/5.0 (Linux; Android 10; TAS-AN00) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/88.0.4324.93 HuaweiBrowser/11.1.1.301 Mobile Safari/537.36 HarmonyOS/2.0.0",
            Os::Harmonyos,
            "2.0.0",
            Browser::HuaweiBrowser,
            "11.1.1.301",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; HarmonyOS; VOG-AL00; HMSCore 6.14.0.302; GMSCore 20.15.16) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.5735.196 HuaweiBrowser/15.0.4.312 Mobile Safari/537.36",
            Os::Harmonyos,
            "",
            Browser::HuaweiBrowser,
            "15.0.4.312",
        ),
        (
            "Mozilla/5.0 (Phone; OpenHarmony 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 ArkWeb/4.1.6.1 Mobile HuaweiBrowser/5.1.9.301",
            Os::Harmonyos,
            "5.0",
            Browser::HuaweiBrowser,
            "5.1.9.301",
        ),
        // OpenHarmony's documentation: the default User-Agent of its web view.
        (
            "Mozilla/5.0 (Phone; OpenHarmony 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 ArkWeb/4.1.6.1 Mobile",
            Os::Harmonyos,
            "5.0",
            Browser::Chrome,
            "114.0.0.0",
        ),
        // Not HarmonyOS: HMSCore on Android 6 (ua-parser-js), a Huawei build id on a
        // Huawei tablet (device-detector).
        (
            "Mozilla/5.0 (Linux; Android 6.0.1; LYA-AL00；HMSCore/4.0.0 GMS/10.4 ) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.64 HuaweiBrowser/10.0.3.102 Mobile Safari/537.36",
            Os::Android,
            "6.0.1",
            Browser::HuaweiBrowser,
            "10.0.3.102",
        ),
        (
            "Mozilla/5.0 (Linux; Android 12; PCE-W40 Build/HUAWEIPCE-W40; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Safari/537.36 XWEB/1160117 MMWEBSDK/20240404 MMWEBID/998 MicroMessenger/8.0.49.2600(0x28003133) WeChat/arm64 Weixin Android Tablet NetType/WIFI Language/zh_CN ABI/arm64",
            Os::Android,
            "12",
            Browser::Wechat,
            "8.0.49.2600",
        ),
    ]);
}

/// UC Browser and Huawei Browser for the PC, and UC's older Android tokens.
#[test]
fn uc_and_huawei_browser_beyond_the_phone() {
    check(&[
        // ua-parser-js.
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 UCPC/1.1.0.12",
            Os::Windows,
            "10",
            Browser::Uc,
            "1.1.0.12",
        ),
        (
            "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/85.0.4183.121 Safari/537.36 HBPC/11.0.2.302",
            Os::Windows,
            "7",
            Browser::HuaweiBrowser,
            "11.0.2.302",
        ),
        // bb33bb/Notes.
        (
            "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/38.0.2125.122 UBrowser/4.0.3214.0 Safari/537.36",
            Os::Windows,
            "7",
            Browser::Uc,
            "4.0.3214.0",
        ),
        // device-detector: China Mobile's build, the version glued to `UCWEB`, and the old
        // Android client's `UC AppleWebKit`.
        (
            "Mozilla/5.0 (Linux; U; Android 4.2.2; zh-CN; R831T Build/JDQ39) AppleWebKit/533.1 (KHTML, like Gecko) Version/4.0 UCBrowser-CMCC/9.9.2.467 U3/0.8.0 Mobile Safari/533.1",
            Os::Android,
            "4.2.2",
            Browser::Uc,
            "9.9.2.467",
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 2.3.5; zh-cn; MI-ONE_Plus Build/GINGERBREAD; 480*854) AppleWebKit/528.5+ (KHTML, like Gecko) Version/3.1.2 Mobile Safari/525.20.1/UCWEB7.9.3.103/139/800",
            Os::Android,
            "2.3.5",
            Browser::Uc,
            "7.9.3.103",
        ),
        (
            "Mozilla 5.0 (Linux; U; Android 4.1.2; zh-cn; SCH-I829 Build JZO54K) UC AppleWebKit 534.31 (KHTML, like Gecko) Mobile Safari 534.31",
            Os::Android,
            "4.1.2",
            Browser::Uc,
            "",
        ),
    ]);
}

/// Edge's Android web view, and Firefox Focus (Klar in German-speaking markets), which
/// render with the system WebView and also say `Chrome/`.
#[test]
fn web_views_that_name_their_browser() {
    check(&[
        // ua-parser-js.
        (
            "Mozilla/5.0 (Linux; Android 11; SM-G991B Build/RP1A.200720.012; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/91.0.4472.120 Mobile Safari/537.36 EdgW/1.0",
            Os::Android,
            "11",
            Browser::Edge,
            "1.0",
        ),
        (
            "Mozilla/5.0 (Linux; Android 7.0) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Focus/6.1.1 Chrome/68.0.3440.91 Mobile Safari/537.36",
            Os::Android,
            "7.0",
            Browser::Firefox,
            "6.1.1",
        ),
        (
            "Mozilla/5.0 (Linux; Android 7.0) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Klar/1.0 Chrome/58.0.3029.83 Mobile Safari/537.36",
            Os::Android,
            "7.0",
            Browser::Firefox,
            "1.0",
        ),
    ]);
}

/// Apple TV: its media player, its apps, and the model id, beside iOS's `CPU OS`.
#[test]
fn apple_tv() {
    check(&[
        // uap-core.
        (
            "AppleCoreMedia/1.0.0.12F69 (Apple TV; U; CPU OS 8_3 like Mac OS X; en_us)",
            Os::Tvos,
            "8.3",
            Browser::Other,
            "",
        ),
        (
            "Viafree-tvOS-DK/3.7.1 (com.MTGx.ViaFree.dk; build:7341; tvOS 12.1.0) Alamofire/4.7.0",
            Os::Tvos,
            "12.1.0",
            Browser::Other,
            "",
        ),
        ("TestApp-tvOS/1.0-1", Os::Tvos, "1.0", Browser::Other, ""),
        // device-detector.
        (
            "Mozilla/5.0 (AppleTV11,1; CPU OS 11.1 like Mac OS X; en-US)",
            Os::Tvos,
            "11.1",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/5.0 (Apple TV; U; CPU iPhone OS 10_1_1 like Mac OS X; en-US) FOX Sports GO/1160",
            Os::Tvos,
            "10.1.1",
            Browser::Other,
            "",
        ),
        (
            "otg/1.5.1 (AppleTv Apple TV 4; tvOS16.2; appletv.client) libcurl/7.58.0 OpenSSL/1.0.2o zlib/1.2.11 clib/1.8.56",
            Os::Tvos,
            "16.2",
            Browser::Other,
            "",
        ),
        ("iTunes-AppleTV/4.1", Os::Tvos, "", Browser::Other, ""),
    ]);
}

/// The Windows and Mac systems of the 1990s and their abbreviations count as `windows` and
/// `macos`, as uap-core counts Windows 95 and device-detector every Mac.
#[test]
fn windows_and_macs_of_the_1990s() {
    check(&[
        // uap-core.
        (
            "Mozilla/5.0 (Windows; N; WinNT; en-US; m14) Netscape6/6.0b1,gzip(gfe),gzip(gfe),gzip(gfe)",
            Os::Windows,
            "",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/5.0 (Windows; U; Win95; en-GB; rv:1.8.0.8) Gecko/20061025 Firefox/1.5.0.8",
            Os::Windows,
            "95",
            Browser::Firefox,
            "1.5.0.8",
        ),
        (
            "Microsoft Internet Explorer/1.0 (Windows 95)",
            Os::Windows,
            "95",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/4.78 [uk] (WinME; U)",
            Os::Windows,
            "",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/5.0 (X11; U; Win95; en-US; rv:1.8.1) Gecko/20061125 BonEcho/2.0",
            Os::Windows,
            "95",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/5.0 (Windows; U; Win 9x 4.90; en-US; rv:1.7) Gecko/20040707 Firefox/0.9.2",
            Os::Windows,
            "",
            Browser::Firefox,
            "0.9.2",
        ),
        (
            "Mozilla/5.0 (Windows; U; WinNT4.0; en-US; rv:1.5) Gecko/20031007",
            Os::Windows,
            "4.0",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/4.0 (compatible; MSIE 5.17; Mac_PowerPC)",
            Os::Macos,
            "",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/4.0 (compatible; MSIE 4.01; AOL 4.0; Mac_PPC)",
            Os::Macos,
            "",
            Browser::Other,
            "",
        ),
        (
            "Opera/7.51 (Mac_PowerPC; U)  [en]",
            Os::Macos,
            "",
            Browser::Opera,
            "7.51",
        ),
        (
            "Mozilla/5.0 (Macintosh; U; PPC; en-US; rv:1.0.2) Gecko/20030208 Netscape/7.02",
            Os::Macos,
            "",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/3.01Gold (Macintosh; I; 68K)",
            Os::Macos,
            "",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/5.0 (Macintosh; U; PPC Mac OS X; en-us) AppleWebKit/418.8 (KHTML, like Gecko) Safari/419.3",
            Os::Macos,
            "",
            Browser::Safari,
            "",
        ),
        // ua-parser-js.
        (
            "Mozilla/4.0 (compatible; MSIE 5.0; Windows 95) Opera 6.01 [en]",
            Os::Windows,
            "95",
            Browser::Opera,
            "6.1",
        ),
        // device-detector: a PowerPC Mac's Safari naming the kernel, and Microsoft's Office.
        (
            "Safari5533.22.3 CFNetwork/438.16 Darwin/9.8.0 (Power Macintosh) (PowerMac7,2)",
            Os::Macos,
            "10.5",
            Browser::Other,
            "",
        ),
        (
            "Microsoft Office Word/16.43.1108 (Mac OS/10.15.6; Desktop; es-MX; NonAppStore; Apple/MacBookAir8,1)",
            Os::Macos,
            "10.15.6",
            Browser::Other,
            "",
        ),
    ]);
}

/// Names that resemble a family's and must not be read as it: a Pixel's code name, an
/// Android phone named after the iPhone, an Android TV box's `smart-tv`, KaiOS saying
/// "Android", a lowercased Windows Phone. (device-detector; uap-core for the last.)
#[test]
fn look_alikes_keep_their_reading() {
    check(&[
        (
            "Mozilla/5.0 (Linux; Android 10; sailfish) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/89.0.4389.86 Safari/537.36",
            Os::Android,
            "10",
            Browser::Chrome,
            "89.0.4389.86",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; Iphone12 pro max) AppleWebKit/601.36 (KHTML, like Gecko) Chrome/105.0.0.0 Mobile Safari/537.36",
            Os::Android,
            "10",
            Browser::Chrome,
            "105.0.0.0",
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 5.0.1; NVIDIA Shield; smart-tv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Safari/537.36",
            Os::Android,
            "5.0.1",
            Browser::Other,
            "",
        ),
        (
            "Mozilla/5.0 (Mobile; LYF/F30C/LYF_F30C-000-09-10-140318; Android; rv:48.0) Gecko/48.0 Firefox/48.0 KAIOS/2.0",
            Os::Other,
            "",
            Browser::Firefox,
            "48.0",
        ),
        (
            "Mozilla/5.0 (compatible; msie 9.0; windows phone os 7.5; trident/5.0; iemobile/9.0; samsung; sgh-i917)",
            Os::Other,
            "",
            Browser::Other,
            "",
        ),
    ]);
}

/// Everyday browsers, in their usual case and lowercased, keep their reading. Windows 11
/// sends Windows 10's `Windows NT 10.0`, so both are `windows` 10. (ua-parser-js; liaoDemo
/// for the lowercased.)
#[test]
fn everyday_browsers_keep_their_reading() {
    check(&[
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/112.0.0.0 Safari/537.36",
            Os::Windows,
            "10",
            Browser::Chrome,
            "112.0.0.0",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.48 Safari/537.36 Edg/74.1.96.24",
            Os::Windows,
            "10",
            Browser::Edge,
            "74.1.96.24",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/100.0.1108.55 Safari/537.36 Edg/100.0.1108.55",
            Os::Macos,
            "10.15.7",
            Browser::Edge,
            "100.0.1108.55",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:100.0) Gecko/20100101 Firefox/100.0",
            Os::Macos,
            "10.15",
            Browser::Firefox,
            "100.0",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.6,2 Safari/605.1.15",
            Os::Macos,
            "10.15.6",
            Browser::Safari,
            "15.6",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/111.0.0.0 Safari/537.36",
            Os::Linux,
            "",
            Browser::Chrome,
            "111.0.0.0",
        ),
        (
            "Mozilla/5.0 (Linux; Android 7.1.2; Nexus 5X Build/N2G47W) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/58.0.3029.83 Mobile Safari/537.36",
            Os::Android,
            "7.1.2",
            Browser::Chrome,
            "58.0.3029.83",
        ),
        (
            "Mozilla/5.0 (Linux; Android 5.1.1; Nexus 5 Build/LMY48B; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/43.0.2357.65 Mobile Safari/537.36",
            Os::Android,
            "5.1.1",
            Browser::Chrome,
            "43.0.2357.65",
        ),
        (
            "Mozilla/5.0 (Android 5.0; Mobile; rv:41.0) Gecko/41.0 Firefox/41.0",
            Os::Android,
            "5.0",
            Browser::Firefox,
            "41.0",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)  Mobile/15E148 Safari/604.1",
            Os::Ios,
            "16.3",
            Browser::Safari,
            "",
        ),
        (
            "mozilla/5.0 (windows nt 10.0; win64; x64) applewebkit/537.36 (khtml, like gecko) chrome/91.0.4472.101 safari/537.36",
            Os::Windows,
            "10",
            Browser::Chrome,
            "91.0.4472.101",
        ),
        (
            "mozilla/5.0 (macintosh; intel mac os x 10_13_6) applewebkit/537.36 (khtml, like gecko) chrome/90.0.4430.212 safari/537.36",
            Os::Macos,
            "10.13.6",
            Browser::Chrome,
            "90.0.4430.212",
        ),
        (
            "mozilla/5.0 (iphone; cpu iphone os 14_6 like mac os x) applewebkit/605.1.15 (khtml, like gecko) version/14.1.1 mobile/15e148 safari/604.1",
            Os::Ios,
            "14.6",
            Browser::Safari,
            "14.1.1",
        ),
    ]);
}
