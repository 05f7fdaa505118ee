//! What the DIMSE tests share: an SCP served in-process over a local-directory
//! store and the in-process bus, the external tools (dcmtk, gdcm, Orthanc) with
//! the rule for when they are missing, and test instances written to disk.
#![allow(dead_code)] // each test file uses its own part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fxtriage_bus::{Bus, InProcessBus};
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_ingest::dimse::{self, DimseOptions};
use fxtriage_ingest::{Ingestor, SiteRegistry, Sites};
use fxtriage_objstore::{LocalDirStore, ObjectKey, ObjectStore};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1::InstanceStored;
use tokio_util::sync::CancellationToken;

/// The called AE title of the test site, and its id.
pub const AE_TITLE: &str = "FXTRIAGE";
pub const SITE: &str = "st-marys";
/// A second site whose instances may be at most [`TINY_LIMIT`] bytes.
pub const TINY_AE_TITLE: &str = "FXTINY";
pub const TINY_LIMIT: u64 = 64 * 1024;

pub fn sites_toml() -> String {
    format!(
        r#"
        [[site]]
        id = "{SITE}"
        ae_titles = ["{AE_TITLE}"]

        [[site]]
        id = "tiny"
        ae_titles = ["{TINY_AE_TITLE}"]
        [site.limits]
        max_instance_bytes = {TINY_LIMIT}

        [[site]]
        id = "listed"
        called_ae_titles = ["{LISTED_AE_TITLE}"]
        calling_ae_titles = ["{ALLOWED_CALLING_AE_TITLE}"]

        [[site]]
        id = "single"
        called_ae_titles = ["{SINGLE_AE_TITLE}"]
        [site.intake]
        max_associations = 1

        [[site]]
        id = "secure"
        called_ae_titles = ["{SECURE_AE_TITLE}"]
        [site.dicom_tls]
        client_names = ["{SECURE_CLIENT_NAME}"]
        "#
    )
}

/// A site that takes C-STORE over DICOM TLS only, from a client certificate
/// naming [`SECURE_CLIENT_NAME`].
pub const SECURE_AE_TITLE: &str = "FXSECURE";
pub const SECURE_CLIENT_NAME: &str = fxtriage_testkit::pki::CLIENT_NAME;

/// A site that may hold one association at a time.
pub const SINGLE_AE_TITLE: &str = "FXSINGLE";

/// A site that admits only one sender, by its calling AE title.
pub const LISTED_AE_TITLE: &str = "LISTED_FX";
pub const ALLOWED_CALLING_AE_TITLE: &str = "CR_ALLOWED";

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("fxtriage_ingest=info")),
        )
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// The SCP under test, served on a free loopback port until dropped or stopped.
pub struct Scp {
    pub address: SocketAddr,
    pub store: Arc<dyn ObjectStore>,
    pub bus: Arc<InProcessBus>,
    /// Where instances are buffered while they arrive.
    pub buffer_dir: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Scp {
    pub async fn start() -> Self {
        Self::start_with(DimseOptions::default()).await
    }

    pub async fn start_with(options: DimseOptions) -> Self {
        Self::start_on_store(options, "store").await
    }

    /// An SCP whose object store fails every write (its root is a regular file).
    pub async fn start_with_broken_store() -> Self {
        let scp = Self::start_on_store(DimseOptions::default(), "not-a-directory").await;
        std::fs::write(scp._dir.path().join("not-a-directory"), b"").expect("write");
        scp
    }

    /// An SCP within `limits`, which another SCP may share (as ingest's plain
    /// and DICOM TLS listeners do).
    pub async fn start_sharing(options: DimseOptions, limits: dimse::DimseLimits) -> Self {
        Self::start_on_store_within(options, "store", Some(limits)).await
    }

    async fn start_on_store(options: DimseOptions, store_root: &str) -> Self {
        Self::start_on_store_within(options, store_root, None).await
    }

    async fn start_on_store_within(
        mut options: DimseOptions,
        store_root: &str,
        limits: Option<dimse::DimseLimits>,
    ) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path().join(store_root)));
        let bus = Arc::new(InProcessBus::default());
        let ingestor = Ingestor::new(
            Arc::clone(&store),
            bus.clone() as Arc<dyn Bus>,
            &fxtriage_proto::Namespace::none(),
        );
        let sites = SiteRegistry::fixed(Sites::from_toml(&sites_toml()).expect("sites"));
        let buffer_dir = dir.path().join("incoming");
        std::fs::create_dir_all(&buffer_dir).expect("buffer dir");
        options.temp_dir = Some(buffer_dir.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let limits = limits.unwrap_or_else(|| dimse::DimseLimits::new(&options));
        let task = tokio::spawn(dimse::serve_sharing(
            listener,
            ingestor,
            sites,
            options,
            limits,
            shutdown.clone(),
        ));
        Self {
            address,
            store,
            bus,
            buffer_dir,
            _dir: dir,
            shutdown,
            task: Some(task),
        }
    }

    pub fn port(&self) -> String {
        self.address.port().to_string()
    }

    /// Cancels the server and waits for it to return.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("the server stops")
                .expect("the server task does not panic")
                .expect("the server returns Ok");
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// The InstanceStored events published so far (waits up to `wait` for `expected`).
    pub async fn events(&self, expected: usize, wait: Duration) -> Vec<InstanceStored> {
        let consumer = self
            .bus
            .subscribe("dimse-test", &[topics::INSTANCES])
            .await
            .expect("subscribe");
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while events.len() < expected {
            let Ok(next) = tokio::time::timeout_at(deadline, consumer.next()).await else {
                break;
            };
            let message = next.expect("next");
            consumer.ack(&message).expect("ack");
            events.push(
                InstanceStored::decode(message.payload.as_slice()).expect("an InstanceStored"),
            );
        }
        // Anything beyond `expected` that is already there.
        while let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
        {
            consumer.ack(&message).expect("ack");
            events.push(
                InstanceStored::decode(message.payload.as_slice()).expect("an InstanceStored"),
            );
        }
        events
    }

    pub async fn stored(&self, object_key: &str) -> Vec<u8> {
        let key = ObjectKey::parse(object_key).expect("key");
        self.store
            .get(&key)
            .await
            .unwrap_or_else(|error| panic!("{object_key}: {error}"))
            .to_vec()
    }

    pub async fn quarantined(&self) -> Vec<fxtriage_ingest::quarantine::QuarantineRecord> {
        fxtriage_ingest::quarantine::list(self.store.as_ref(), None)
            .await
            .expect("list quarantine")
    }

    pub async fn objects_under(&self, prefix: &str) -> usize {
        self.store.list(prefix).await.expect("list").len()
    }

    /// Temporary files left behind by the SCP (there must be none).
    pub fn leftover_buffers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.buffer_dir)
            .expect("buffer dir")
            .map(|entry| entry.expect("entry").path())
            .collect()
    }
}

impl Drop for Scp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The path of `tool` if it is installed.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        // Orthanc installs to /usr/sbin, which a non-root PATH often lacks.
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// True if every tool is installed. Otherwise skips the test (fails it when the
/// stack is required; see `fxtriage_testkit::stack`) and returns false.
pub fn tools_available(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| find_tool(tool).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let _ = test;
    fxtriage_testkit::stack::skip(&format!(
        "{} not installed (scripts/bootstrap installs them)",
        missing.join(", ")
    ));
    false
}

/// What a finished tool run printed, and how it ended.
#[derive(Debug)]
pub struct ToolRun {
    pub success: bool,
    pub code: Option<i32>,
    pub output: String,
}

/// Runs `tool` to completion (at most two minutes). The child is killed if the
/// test fails or times out while waiting for it.
pub async fn run_tool<I, S>(tool: &str, args: I) -> ToolRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let program = find_tool(tool).unwrap_or_else(|| panic!("{tool} is not installed"));
    let child = tokio::process::Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {tool}: {error}"));
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{tool} did not finish within two minutes"))
        .unwrap_or_else(|error| panic!("{tool}: {error}"));
    ToolRun {
        success: output.status.success(),
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Writes `instance` as a Part 10 file named `name` in `dir`.
pub fn write_instance(dir: &Path, name: &str, instance: &SyntheticInstance) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, instance.to_part10()).expect("write instance");
    path
}

/// A test file as sent, with what the SCP must make of it.
#[derive(Debug, Clone)]
pub struct SentFile {
    pub label: String,
    pub path: PathBuf,
    pub transfer_syntax_uid: String,
    pub sop_instance_uid: String,
    pub object_key: String,
}

/// Reads what a sent file's stored copy must match.
pub fn describe_sent(label: &str, site: &str, path: &Path) -> SentFile {
    use dicom_dictionary_std::tags;
    let object = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .unwrap_or_else(|error| panic!("{label}: cannot read {}: {error}", path.display()));
    let text = |tag| {
        object
            .element(tag)
            .unwrap_or_else(|error| panic!("{label}: {error}"))
            .to_str()
            .expect("text")
            .trim_end_matches(['\0', ' '])
            .to_owned()
    };
    let sop_instance_uid = text(tags::SOP_INSTANCE_UID);
    SentFile {
        label: label.to_owned(),
        path: path.to_owned(),
        transfer_syntax_uid: object
            .meta()
            .transfer_syntax()
            .trim_end_matches(['\0', ' '])
            .to_owned(),
        object_key: format!(
            "{site}/{}/{}/{sop_instance_uid}.dcm",
            text(tags::STUDY_INSTANCE_UID),
            text(tags::SERIES_INSTANCE_UID)
        ),
        sop_instance_uid,
    }
}

/// The file meta group of a Part 10 file, parsed: (transfer syntax UID, offset of
/// the data set). Reads the elements of group 0002 one by one rather than trusting
/// the group length.
pub fn split_part10(bytes: &[u8]) -> (String, usize) {
    assert!(
        bytes.len() > 132 && &bytes[128..132] == b"DICM",
        "not a Part 10 file"
    );
    let mut offset = 132;
    let mut transfer_syntax = String::new();
    loop {
        let group = u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
        if group != 0x0002 {
            return (transfer_syntax, offset);
        }
        let element = u16::from_le_bytes([bytes[offset + 2], bytes[offset + 3]]);
        let vr = &bytes[offset + 4..offset + 6];
        let (header, length) = if matches!(
            vr,
            b"OB"
                | b"OW"
                | b"OF"
                | b"SQ"
                | b"UT"
                | b"UN"
                | b"UC"
                | b"UR"
                | b"OD"
                | b"OL"
                | b"OV"
                | b"SV"
                | b"UV"
        ) {
            let length =
                u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().expect("4 bytes"));
            (12, length as usize)
        } else {
            (
                8,
                u16::from_le_bytes([bytes[offset + 6], bytes[offset + 7]]) as usize,
            )
        };
        let value = &bytes[offset + header..offset + header + length];
        if element == 0x0010 {
            transfer_syntax = String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_owned();
        }
        offset += header + length;
    }
}

const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// Asserts that the stored object holds exactly the data set that was sent, in the
/// transfer syntax it was sent in.
pub fn assert_same_data_set(sent: &SentFile, stored: &[u8]) {
    let sent_bytes = std::fs::read(&sent.path).expect("read sent file");
    let (sent_syntax, sent_offset) = split_part10(&sent_bytes);
    let (stored_syntax, stored_offset) = split_part10(stored);
    assert_eq!(sent_syntax, sent.transfer_syntax_uid, "{}", sent.label);
    assert_eq!(
        stored_syntax, sent_syntax,
        "{}: transfer syntax in the stored meta",
        sent.label
    );
    let (sent_data_set, mut stored_data_set) =
        (&sent_bytes[sent_offset..], &stored[stored_offset..]);
    if sent.transfer_syntax_uid == DEFLATED && sent_data_set.len() % 2 == 1 {
        // A P-DATA value has even length, so dcmtk pads an odd deflated stream with
        // one zero byte on the wire (PS3.5 A.5); the SCP stores what it received.
        assert_eq!(
            stored_data_set.len(),
            sent_data_set.len() + 1,
            "{}: padded",
            sent.label
        );
        assert_eq!(stored_data_set.last(), Some(&0), "{}: padding", sent.label);
        stored_data_set = &stored_data_set[..sent_data_set.len()];
    }
    assert_eq!(
        stored_data_set.len(),
        sent_data_set.len(),
        "{}: data set length",
        sent.label
    );
    assert!(
        stored_data_set == sent_data_set,
        "{}: data set bytes differ",
        sent.label
    );
}

/// A C-STORE response as dcmtk's storescu or dcmsend (run with `-d`) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedResponse {
    pub status: u16,
    pub error_comment: Option<String>,
}

/// The C-STORE responses in the debug output of storescu or dcmsend.
pub fn store_responses(output: &str) -> Vec<ReportedResponse> {
    let mut responses: Vec<ReportedResponse> = Vec::new();
    let mut in_store_response = false;
    for line in output.lines() {
        let line = line.trim_start_matches("D: ").trim();
        if line.starts_with("Message Type") {
            in_store_response = line.ends_with("C-STORE RSP");
        } else if in_store_response && line.starts_with("DIMSE Status") {
            let code = line
                .split(':')
                .nth(1)
                .map(str::trim)
                .and_then(|code| code.strip_prefix("0x"))
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                .unwrap_or_else(|| panic!("unexpected status line {line:?}"));
            responses.push(ReportedResponse {
                status: code,
                error_comment: None,
            });
        } else if line.starts_with("(0000,0902)")
            && let Some(last) = responses.last_mut()
        {
            let comment = line
                .split_once('[')
                .and_then(|(_, rest)| rest.rsplit_once(']'))
                .map(|(comment, _)| comment.to_owned());
            last.error_comment = comment;
        }
    }
    responses
}

/// A minimal SCU on dicom-ul, for what dcmtk will not send: truncated data sets,
/// data sets that contradict their command, protocol violations.
pub mod scu {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
    use dicom_ul::association::client::AsyncClientAssociation;
    use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
    use dicom_ul::{ClientAssociationOptions, Pdu};
    use tokio::net::TcpStream;

    use super::Scp;

    pub type Association = AsyncClientAssociation<TcpStream>;

    /// An association proposing `abstract_syntax` in Explicit VR Little Endian.
    pub async fn associate(
        scp: &Scp,
        called_ae_title: &str,
        abstract_syntax: &str,
    ) -> Result<Association, dicom_ul::association::Error> {
        associate_as(scp, "TESTSCU", called_ae_title, abstract_syntax).await
    }

    /// [`associate`] as `calling_ae_title`.
    pub async fn associate_as(
        scp: &Scp,
        calling_ae_title: &str,
        called_ae_title: &str,
        abstract_syntax: &str,
    ) -> Result<Association, dicom_ul::association::Error> {
        ClientAssociationOptions::new()
            .calling_ae_title(calling_ae_title)
            .called_ae_title(called_ae_title)
            .with_presentation_context(abstract_syntax, vec![uids::EXPLICIT_VR_LITTLE_ENDIAN])
            .read_timeout(std::time::Duration::from_secs(20))
            .establish_async(scp.address)
            .await
    }

    /// The id of the (single) accepted presentation context.
    pub fn context_id(association: &Association) -> u8 {
        association
            .presentation_contexts()
            .iter()
            .find(|context| context.reason == PresentationContextResultReason::Acceptance)
            .expect("an accepted presentation context")
            .id
    }

    fn encode(command: &InMemDicomObject) -> Vec<u8> {
        let mut encoded = Vec::new();
        command
            .write_dataset_with_ts(&mut encoded, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .expect("encode command");
        encoded
    }

    pub fn c_store_rq(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Vec<u8> {
        encode(&InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(sop_class_uid),
            ),
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(0x0001_u16),
            ),
            DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
            DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0_u16)),
            DataElement::new(
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                PrimitiveValue::from(0_u16),
            ),
            DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(sop_instance_uid),
            ),
        ]))
    }

    pub fn c_echo_rq(message_id: u16) -> Vec<u8> {
        encode(&InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(uids::VERIFICATION),
            ),
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(0x0030_u16),
            ),
            DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
            DataElement::new(
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                PrimitiveValue::from(0x0101_u16),
            ),
        ]))
    }

    pub async fn send_value(
        association: &mut Association,
        context_id: u8,
        value_type: PDataValueType,
        is_last: bool,
        data: &[u8],
    ) -> Result<(), dicom_ul::association::Error> {
        association
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context_id,
                    value_type,
                    is_last,
                    data: data.to_vec(),
                }],
            })
            .await
    }

    pub async fn send_command(association: &mut Association, context_id: u8, command: &[u8]) {
        send_value(
            association,
            context_id,
            PDataValueType::Command,
            true,
            command,
        )
        .await
        .expect("send command");
    }

    /// Sends `data_set` in fragments of `fragment` bytes, the last one flagged.
    pub async fn send_data_set(
        association: &mut Association,
        context_id: u8,
        data_set: &[u8],
        fragment: usize,
    ) {
        let chunks: Vec<&[u8]> = data_set.chunks(fragment).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            send_value(
                association,
                context_id,
                PDataValueType::Data,
                index + 1 == chunks.len(),
                chunk,
            )
            .await
            .expect("send data");
        }
    }

    /// A response's status and error comment.
    #[derive(Debug)]
    pub struct Response {
        pub status: u16,
        pub error_comment: String,
        pub message_id_being_responded_to: u16,
    }

    /// Reads the next PDU, which must be a response command set.
    pub async fn response(association: &mut Association) -> Response {
        let pdu = association.receive().await.expect("a response");
        let Pdu::PData { data } = pdu else {
            panic!("expected a response, got {}", pdu.short_description())
        };
        let command = data
            .into_iter()
            .find(|value| value.value_type == PDataValueType::Command)
            .expect("a command");
        let object = InMemDicomObject::read_dataset_with_ts(
            command.data.as_slice(),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .expect("a command set");
        let number = |tag| {
            object
                .element(tag)
                .expect("element")
                .to_int::<u16>()
                .expect("int")
        };
        Response {
            status: number(tags::STATUS),
            message_id_being_responded_to: number(tags::MESSAGE_ID_BEING_RESPONDED_TO),
            error_comment: object
                .element_opt(tags::ERROR_COMMENT)
                .ok()
                .flatten()
                .map(|element| element.to_str().expect("text").trim().to_owned())
                .unwrap_or_default(),
        }
    }

    /// Sends a C-ECHO on a new association and expects success.
    pub async fn echo(scp: &Scp) {
        let mut association = associate(scp, super::AE_TITLE, uids::VERIFICATION)
            .await
            .expect("association for C-ECHO");
        let context_id = context_id(&association);
        send_command(&mut association, context_id, &c_echo_rq(1)).await;
        assert_eq!(
            response(&mut association).await.status,
            0,
            "C-ECHO succeeds"
        );
        association.release().await.expect("release");
    }
}
