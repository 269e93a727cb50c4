//! BPE of PocketLM's own, as a `tokenizers` model: both kinds of GGUF vocabulary llama.cpp
//! reads, and `tokenizer.json` BPE models (see `Deserialize for Bpe`).
//!
//! - SentencePiece (`llama`): of all adjacent pairs of pieces whose concatenation is a token,
//!   the one whose token has the highest score merges, until none is left. As merges for the
//!   `tokenizers` crate's BPE, that is every split of every token into two tokens, ranked by the
//!   token's score ([`derive_merges`]); Gemma 3's 262,144 tokens give 514,847 of them, and
//!   deriving them and building BPE's merge table took most of a model load's tokenizer time.
//!   Here the concatenation of a pair is looked up in the vocabulary when the pair is met, which
//!   is what SentencePiece and llama.cpp do, and nothing but the vocabulary is needed.
//! - A merge list (GGUF `gpt2`: Llama 3, Qwen, SmolLM; `tokenizer.json`): the pair of the lowest
//!   rank merges first. The list is read straight into a table of token ids (the crate's
//!   builder takes the merges as strings and looks every one up again).
//!
//! Either gives the ids of the crate's BPE exactly: the same initial pieces (a character's token,
//! else, for SentencePiece, its `<0xNN>` byte tokens, else the unknown token, consecutive
//! unknowns fused), the same order of merges (a merge list's rank; for SentencePiece its rank in
//! the derived list: the token's score, higher first, then the token's id, then the length of
//! its left part; equal ranks go left to right), and the same check of a queued pair against the
//! pieces as they are when it comes up. Serialized (for `tokenizer.json`) it is that BPE, built on
//! demand ([`Bpe::to_bpe`]).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashTable;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tokenizers::models::bpe::{BpeTrainer, Vocab, BPE};
use tokenizers::{Model, Token};

/// One token's part in merging.
#[derive(Clone, Copy)]
struct Flags {
    /// Its text maps to it (the first of the ids sharing a text): only those are pieces.
    first: bool,
    /// SentencePiece: normal, user-defined and unused tokens merge; control, byte and unknown
    /// tokens do not.
    mergeable: bool,
}

/// (left, right) → (rank, the merged token).
type MergeTable = HashMap<(u32, u32), (u32, u32)>;

/// Which pair merges first.
enum Ranking {
    /// SentencePiece: a pair merges into the token it spells, by that token's score.
    Scores(Vec<f32>),
    /// A merge list.
    Merges {
        table: MergeTable,
        /// A word that is itself a token stays whole (llama.cpp's `ignore_merges`, Llama 3).
        ignore_merges: bool,
    },
}

/// The tokens' texts in one string, and text → the first id with that text: no allocation per
/// token (Gemma 3 has 262,144; as `String`s, a map and a list of them took 20 MB more).
struct Texts {
    all: String,
    /// Where each token's text ends in `all`.
    ends: Vec<u32>,
    /// The first id of each text, found by the text's hash.
    first: HashTable<u32>,
    hasher: RandomState,
    /// The longest text's bytes.
    longest: usize,
}

impl Texts {
    /// The texts by id (`None` for an id without a token), and which ids are the first with
    /// theirs.
    fn new<'a>(tokens: impl ExactSizeIterator<Item = Option<&'a str>>) -> (Texts, Vec<bool>) {
        let mut t = Texts {
            all: String::new(),
            ends: Vec::with_capacity(tokens.len()),
            first: HashTable::with_capacity(tokens.len()),
            hasher: RandomState::new(),
            longest: 0,
        };
        let mut firsts = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.enumerate() {
            let Some(token) = token else {
                t.ends.push(t.all.len() as u32);
                firsts.push(false);
                continue;
            };
            t.all.push_str(token);
            t.ends.push(t.all.len() as u32);
            t.longest = t.longest.max(token.len());
            let hash = t.hasher.hash_one(token);
            let first = t.first.find(hash, |&id| t.text(id) == token).is_none();
            if first {
                let Texts {
                    first,
                    ends,
                    all,
                    hasher,
                    ..
                } = &mut t;
                first.insert_unique(hash, i as u32, |&id| {
                    hasher.hash_one(text_in(all, ends, id))
                });
            }
            firsts.push(first);
        }
        (t, firsts)
    }

    fn text(&self, id: u32) -> &str {
        text_in(&self.all, &self.ends, id)
    }

    fn get(&self, text: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(text);
        self.first.find(hash, |&id| self.text(id) == text).copied()
    }

    /// Text → first id, as the `tokenizers` crate keeps a vocabulary.
    fn map<M: FromIterator<(String, u32)>>(&self) -> M {
        self.first
            .iter()
            .map(|&id| (self.text(id).to_string(), id))
            .collect()
    }
}

fn text_in<'a>(all: &'a str, ends: &[u32], id: u32) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &all[start..ends[i] as usize]
}

struct Vocabulary {
    texts: Texts,
    flags: Vec<Flags>,
    ranking: Ranking,
    /// A character without a token becomes its bytes' `<0xNN>` tokens (where the vocabulary has
    /// all of them): SentencePiece's byte fallback, with the tokens in `bytes` (none without).
    byte_fallback: bool,
    bytes: [Option<u32>; 256],
    /// The token of text the vocabulary cannot spell (by BPE's rule, the first id of the unknown
    /// token's text), and whether a run of such characters is one of it.
    unk: Option<u32>,
    fuse_unk: bool,
}

/// BPE over a shared vocabulary (cloning is cheap).
#[derive(Clone)]
pub(crate) struct Bpe(Arc<Vocabulary>);

/// What a vocabulary's BPE does besides its ranking.
struct Options<'a> {
    byte_fallback: bool,
    unk: Option<&'a str>,
    fuse_unk: bool,
}

impl Vocabulary {
    /// The texts (`None` for an id without a token), each id's mergeability, the ranking made
    /// from the texts; an unknown token whose text is not a token is an error.
    fn new<'a>(
        tokens: impl ExactSizeIterator<Item = Option<&'a str>>,
        mergeable: impl Fn(u32) -> bool,
        ranking: impl FnOnce(&Texts) -> Result<Ranking, String>,
        o: Options,
    ) -> Result<Vocabulary, String> {
        let (texts, firsts) = Texts::new(tokens);
        let flags = firsts
            .into_iter()
            .enumerate()
            .map(|(i, first)| Flags {
                first,
                mergeable: mergeable(i as u32),
            })
            .collect();
        let bytes = match o.byte_fallback {
            true => std::array::from_fn(|b| texts.get(&format!("<0x{b:02X}>"))),
            false => [None; 256],
        };
        let unk = match o.unk {
            Some(t) => Some(
                texts
                    .get(t)
                    .ok_or_else(|| format!("the unknown token '{t}' is not in the vocabulary"))?,
            ),
            None => None,
        };
        Ok(Vocabulary {
            ranking: ranking(&texts)?,
            texts,
            flags,
            byte_fallback: o.byte_fallback,
            bytes,
            unk,
            fuse_unk: o.fuse_unk,
        })
    }
}

/// The merge table of a list of pairs of texts in rank order. `strict`: a pair naming a text
/// the vocabulary lacks is an error (the `tokenizers` crate's rule for `tokenizer.json`);
/// otherwise it is left out (llama.cpp's, for GGUF).
fn merge_table<'a>(
    texts: &Texts,
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    strict: bool,
) -> Result<MergeTable, String> {
    let mut table = HashMap::with_capacity(pairs.len());
    let mut joined = String::new();
    let mut rank = 0u32;
    for (a, b) in pairs {
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        match (texts.get(a), texts.get(b), texts.get(&joined)) {
            (Some(a), Some(b), Some(new)) => {
                // As the crate's BPE: a pair listed twice keeps its later rank.
                table.insert((a, b), (rank, new));
                rank += 1;
            }
            _ if strict => return Err(format!("the merge '{a} {b}' names a missing token")),
            _ => {}
        }
    }
    Ok(table)
}

impl Bpe {
    /// SentencePiece BPE. `mergeable(id)` says whether a token of that id takes part in merges;
    /// `unk` is the id whose text stands for text the vocabulary cannot spell (its first id is
    /// used, as BPE looks the unknown token up by text).
    pub(crate) fn sentencepiece(
        tokens: &[String],
        scores: &[f32],
        mergeable: impl Fn(u32) -> bool,
        unk: Option<u32>,
    ) -> Bpe {
        let o = Options {
            byte_fallback: true,
            unk: unk.and_then(|u| tokens.get(u as usize)).map(String::as_str),
            fuse_unk: true,
        };
        let texts = tokens.iter().map(|t| Some(t.as_str()));
        let ranking = |_: &Texts| Ok(Ranking::Scores(scores.to_vec()));
        // The unknown token's text is one of the tokens: it is in the vocabulary.
        Bpe(Arc::new(
            Vocabulary::new(texts, mergeable, ranking, o).expect("a token's text is a token"),
        ))
    }

    /// BPE with a merge list, each merge two tokens' texts separated by a space (split, as
    /// llama.cpp does, at the first space after the first character). Merges that name a text
    /// the vocabulary does not have are left out (llama.cpp never forms those pieces either); a
    /// merge without a space is an error, returned as that merge.
    pub(crate) fn with_merges(
        tokens: &[String],
        merges: &[String],
        ignore_merges: bool,
    ) -> Result<Bpe, String> {
        let mut pairs = Vec::with_capacity(merges.len());
        for m in merges {
            let first = m.chars().next().map_or(0, char::len_utf8);
            let Some(space) = m[first..].find(' ').map(|p| p + first) else {
                return Err(m.clone());
            };
            pairs.push((&m[..space], &m[space + 1..]));
        }
        let texts = tokens.iter().map(|t| Some(t.as_str()));
        let ranking = |texts: &Texts| {
            Ok(Ranking::Merges {
                table: merge_table(texts, pairs.into_iter(), false)?,
                ignore_merges,
            })
        };
        let o = Options {
            byte_fallback: false,
            unk: None,
            fuse_unk: false,
        };
        Ok(Bpe(Arc::new(Vocabulary::new(texts, |_| true, ranking, o)?)))
    }

    /// The same tokenizer as the `tokenizers` crate's BPE (for SentencePiece, with
    /// [`derive_merges`]).
    pub(crate) fn to_bpe(&self) -> tokenizers::Result<BPE> {
        let v = &self.0;
        let vocab: Vocab = v.texts.map();
        let text = |id: u32| v.texts.text(id).to_string();
        let (builder, ignore_merges) = match &v.ranking {
            Ranking::Scores(scores) => {
                let merges = derive_merges(&v.texts, scores, |id| self.merges(id));
                (BPE::builder().vocab_and_merges(vocab, merges), false)
            }
            Ranking::Merges {
                table,
                ignore_merges,
            } => {
                let mut ranked: Vec<(u32, u32, u32)> =
                    table.iter().map(|(&(a, b), &(r, _))| (r, a, b)).collect();
                ranked.sort_unstable();
                let merges = ranked.into_iter().map(|(_, a, b)| (text(a), text(b)));
                (
                    BPE::builder().vocab_and_merges(vocab, merges.collect()),
                    *ignore_merges,
                )
            }
        };
        let mut builder = builder
            .byte_fallback(v.byte_fallback)
            .fuse_unk(v.fuse_unk)
            .ignore_merges(ignore_merges);
        if let Some(u) = v.unk {
            builder = builder.unk_token(text(u));
        }
        builder.build()
    }

    fn merges(&self, id: u32) -> bool {
        self.0.flags[id as usize].mergeable
    }

    /// What merging `a` and `b` gives: its rank and token, `None` when they do not merge.
    fn pair(&self, text: &str, a: &Piece, b: &Piece, buf: &mut String) -> Option<Merge> {
        let v = &self.0;
        let scores = match &v.ranking {
            Ranking::Merges { table, .. } => {
                let &(rank, id) = table.get(&(a.id, b.id))?;
                return Some(Merge {
                    score: 0.0,
                    rank,
                    cut: 0,
                    id,
                    pos: 0,
                });
            }
            Ranking::Scores(scores) => scores,
        };
        if !(self.merges(a.id) && self.merges(b.id)) {
            return None;
        }
        let (left, right) = (v.texts.text(a.id), v.texts.text(b.id));
        if left.is_empty() || right.is_empty() || left.len() + right.len() > v.texts.longest {
            return None;
        }
        // A piece that spells its stretch of the text is looked up there, without a copy.
        let joined = if a.spells && b.spells && a.at + a.len == b.at {
            &text[a.at..b.at + b.len]
        } else {
            buf.clear();
            buf.push_str(left);
            buf.push_str(right);
            buf.as_str()
        };
        let id = v.texts.get(joined)?;
        self.merges(id).then(|| Merge {
            score: scores[id as usize],
            rank: id,
            cut: left.len() as u32,
            id,
            pos: 0,
        })
    }
}

/// SentencePiece BPE as merges: every split of a token into two tokens merges with the token's
/// score, higher scores first (then by token id, then by where the split is).
fn derive_merges(
    texts: &Texts,
    scores: &[f32],
    mergeable: impl Fn(u32) -> bool,
) -> Vec<(String, String)> {
    let mut merges: Vec<(f32, u32, usize, &str, &str)> = Vec::new();
    for id in 0..texts.ends.len() as u32 {
        let t = texts.text(id);
        if !mergeable(id) || texts.get(t) != Some(id) {
            continue;
        }
        for (cut, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(cut);
            let ok = |s: &str| texts.get(s).is_some_and(&mergeable);
            if ok(l) && ok(r) {
                merges.push((scores[id as usize], id, cut, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// A piece of the text being tokenized.
#[derive(Clone, Copy)]
struct Piece {
    id: u32,
    /// Where its text starts, and its length in bytes (0 once merged into the piece before it).
    at: usize,
    len: usize,
    /// Its token's text is `text[at..at + len]` (not so for byte and unknown tokens).
    spells: bool,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A queued merge of the piece at `pos` with the next one into token `id`, ranked by `score`
/// (higher first), then `rank` and `cut` (lower first): for SentencePiece the token's score, its
/// id and the length of the left part; for a merge list only `rank`, the merge's place in it.
#[derive(Clone, Copy)]
struct Merge {
    score: f32,
    rank: u32,
    cut: u32,
    id: u32,
    pos: usize,
}

impl Ord for Merge {
    /// Greater comes first: the higher score, then the lower rank, the shorter left part, the
    /// position further left.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then(o.rank.cmp(&self.rank))
            .then(o.cut.cmp(&self.cut))
            .then(o.pos.cmp(&self.pos))
    }
}
impl PartialOrd for Merge {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Merge {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Merge {}

impl Bpe {
    /// The initial pieces of `text`, as BPE makes them.
    fn pieces(&self, text: &str) -> Vec<Piece> {
        let v = &self.0;
        let mut pieces: Vec<Piece> = Vec::with_capacity(text.len());
        let push = |pieces: &mut Vec<Piece>, id: u32, at: usize, len: usize, spells: bool| {
            let i = pieces.len();
            if let Some(last) = pieces.last_mut() {
                last.next = Some(i);
            }
            pieces.push(Piece {
                id,
                at,
                len,
                spells,
                prev: i.checked_sub(1),
                next: None,
            });
        };
        // A pending unknown token: (where it starts, its length).
        let mut unk: Option<(usize, usize)> = None;
        for (at, c) in text.char_indices() {
            let s = &text[at..at + c.len_utf8()];
            if let Some(id) = v.texts.get(s) {
                if let (Some((u_at, u_len)), Some(u)) = (unk.take(), v.unk) {
                    push(&mut pieces, u, u_at, u_len, false);
                }
                push(&mut pieces, id, at, s.len(), true);
                continue;
            }
            let bytes: Option<Vec<u32>> = s.bytes().map(|b| v.bytes[b as usize]).collect();
            if let Some(bytes) = bytes {
                // As BPE: a pending unknown token waits past the bytes.
                for (k, id) in bytes.into_iter().enumerate() {
                    push(&mut pieces, id, at + k, 1, false);
                }
                continue;
            }
            if let Some(u) = v.unk {
                unk = Some(match unk {
                    Some((u_at, u_len)) if v.fuse_unk => (u_at, u_len + s.len()),
                    Some((u_at, u_len)) => {
                        push(&mut pieces, u, u_at, u_len, false);
                        (at, s.len())
                    }
                    None => (at, s.len()),
                });
            }
        }
        if let (Some((u_at, u_len)), Some(u)) = (unk, v.unk) {
            push(&mut pieces, u, u_at, u_len, false);
        }
        pieces
    }
}

impl Model for Bpe {
    /// Never used: nothing is trained here.
    type Trainer = BpeTrainer;

    fn tokenize(&self, text: &str) -> tokenizers::Result<Vec<Token>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        if let Ranking::Merges {
            ignore_merges: true,
            ..
        } = self.0.ranking
        {
            if let Some(id) = self.0.texts.get(text) {
                return Ok(vec![Token::new(id, text.to_string(), (0, text.len()))]);
            }
        }
        let mut pieces = self.pieces(text);
        let mut buf = String::new();
        let mut queue: BinaryHeap<Merge> = pieces
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                let m = self.pair(text, &w[0], &w[1], &mut buf)?;
                Some(Merge { pos, ..m })
            })
            .collect();
        while let Some(top) = queue.pop() {
            let left = pieces[top.pos];
            let Some(next) = left.next.filter(|_| left.len != 0) else {
                continue;
            };
            let right = pieces[next];
            // A pair that has changed since it was queued.
            if self
                .pair(text, &left, &right, &mut buf)
                .is_none_or(|m| m.id != top.id)
            {
                continue;
            }
            pieces[top.pos] = Piece {
                id: top.id,
                len: left.len + right.len,
                spells: left.spells && right.spells && left.at + left.len == right.at,
                next: right.next,
                ..left
            };
            pieces[next].len = 0;
            if let Some(after) = right.next {
                pieces[after].prev = Some(top.pos);
            }
            let merged = pieces[top.pos];
            if let Some(p) = merged.prev {
                if let Some(m) = self.pair(text, &pieces[p], &merged, &mut buf) {
                    queue.push(Merge { pos: p, ..m });
                }
            }
            if let Some(n) = merged.next {
                if let Some(m) = self.pair(text, &merged, &pieces[n], &mut buf) {
                    queue.push(Merge { pos: top.pos, ..m });
                }
            }
        }
        // Offsets as BPE gives them: each piece's length after the previous one's end.
        let mut end = 0;
        Ok(pieces
            .iter()
            .filter(|p| p.len != 0)
            .map(|p| {
                let start = end;
                end += p.len;
                Token::new(p.id, self.0.texts.text(p.id).to_string(), (start, end))
            })
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.0.texts.get(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        let i = id as usize;
        (self.0.flags.get(i)?.first).then(|| self.0.texts.text(id).to_string())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        self.0.texts.map()
    }

    fn get_vocab_size(&self) -> usize {
        self.0.texts.first.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("this BPE is saved as part of tokenizer.json (Tokenizer::to_json)".into())
    }

    fn get_trainer(&self) -> BpeTrainer {
        BpeTrainer::default()
    }
}

impl Serialize for Bpe {
    /// As the `tokenizers` crate's BPE ([`Bpe::to_bpe`]), which reads it back.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_bpe()
            .map_err(|e| serde::ser::Error::custom(e.to_string()))?
            .serialize(s)
    }
}

/// `tokenizer.json`'s BPE model, where this BPE runs it as the `tokenizers` crate does: no
/// dropout, no continuing-subword prefix, no end-of-word suffix (the files of Llama 3, Qwen,
/// Gemma, Mistral and SmolLM). Anything else is an error, and the caller reads the file with the
/// crate's own BPE.
impl<'de> Deserialize<'de> for Bpe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bpe, D::Error> {
        BpeJson::deserialize(d)?
            .build()
            .map(|v| Bpe(Arc::new(v)))
            .map_err(de::Error::custom)
    }
}

/// A string from the JSON, borrowed where it has no escapes.
#[derive(PartialEq, Eq, Hash)]
struct Text<'a>(Cow<'a, str>);

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(s.to_string())))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

/// A merge: `"a b"` (the older form) or `["a", "b"]`.
enum MergeJson<'a> {
    Line(Text<'a>),
    Pair(Text<'a>, Text<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for MergeJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MergeJson<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MergeJson<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a merge")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<MergeJson<'de>, E> {
                TextVisitor.visit_borrowed_str(s).map(MergeJson::Line)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MergeJson<'de>, E> {
                TextVisitor.visit_str(s).map(MergeJson::Line)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MergeJson<'de>, A::Error> {
                let mut next = || -> Result<Text<'de>, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| de::Error::custom("a merge is a pair of tokens"))
                };
                let (a, b) = (next()?, next()?);
                match seq.next_element::<de::IgnoredAny>()? {
                    None => Ok(MergeJson::Pair(a, b)),
                    Some(_) => Err(de::Error::custom("a merge is a pair of tokens")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct BpeJson<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    dropout: Option<f32>,
    #[serde(borrow)]
    unk_token: Option<Text<'a>>,
    #[serde(borrow)]
    continuing_subword_prefix: Option<Text<'a>>,
    #[serde(borrow)]
    end_of_word_suffix: Option<Text<'a>>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    #[serde(borrow)]
    vocab: Option<HashMap<Text<'a>, u32>>,
    #[serde(borrow)]
    merges: Option<Vec<MergeJson<'a>>>,
}

impl BpeJson<'_> {
    fn build(&self) -> Result<Vocabulary, String> {
        if self.kind.as_ref().map(|k| &*k.0) != Some("BPE") {
            return Err("not a BPE model".into());
        }
        if self.dropout.is_some_and(|d| d != 0.0)
            || self.continuing_subword_prefix.is_some()
            || self.end_of_word_suffix.is_some()
        {
            return Err("BPE with dropout, a subword prefix or a word suffix".into());
        }
        let (Some(vocab), Some(merges)) = (&self.vocab, &self.merges) else {
            return Err("missing vocab/merges".into());
        };
        let n = vocab.values().max().map_or(0, |&m| m as usize + 1);
        if n > super::tokenizer::MAX_VOCAB_TOKENS {
            return Err(format!("token id {} is too large", n - 1));
        }
        let mut tokens: Vec<Option<&str>> = vec![None; n];
        for (t, &id) in vocab {
            if tokens[id as usize].replace(&t.0).is_some() {
                return Err(format!("two tokens have the id {id}"));
            }
        }
        // As the crate: one form for all merges; `#version` lines of the older form skipped.
        let mut pairs = Vec::with_capacity(merges.len());
        let lines = merges.iter().any(|m| matches!(m, MergeJson::Line(_)));
        for m in merges {
            match m {
                MergeJson::Pair(a, b) if !lines => pairs.push((&*a.0, &*b.0)),
                MergeJson::Line(l) if l.0.starts_with("#version") => {}
                MergeJson::Line(l) => match l.0.split_once(' ') {
                    Some((a, b)) if !b.contains(' ') => pairs.push((a, b)),
                    _ => return Err(format!("bad merge '{}'", l.0)),
                },
                MergeJson::Pair(..) => return Err("merges of both forms".into()),
            }
        }
        let ignore_merges = self.ignore_merges.unwrap_or(false);
        let ranking = |texts: &Texts| {
            Ok(Ranking::Merges {
                table: merge_table(texts, pairs.into_iter(), true)?,
                ignore_merges,
            })
        };
        let o = Options {
            byte_fallback: self.byte_fallback.unwrap_or(false),
            unk: self.unk_token.as_ref().map(|t| &*t.0),
            fuse_unk: self.fuse_unk.unwrap_or(false),
        };
        Vocabulary::new(tokens.into_iter(), |_| true, ranking, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: the same cases on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    const ALPHABET: [&str; 6] = ["a", "b", "c", "▁", "é", "日"];

    /// Tokens over the first `letters` letters of [`ALPHABET`], with every kind of tie and gap:
    /// equal scores, ids that share a text, tokens that split several ways, unmergeable tokens,
    /// missing byte tokens.
    fn vocab(rng: &mut Rng, letters: usize) -> (Vec<String>, Vec<f32>, Vec<bool>) {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into()];
        let mut mergeable = vec![false, false];
        for b in 0..=255u8 {
            // Some bytes have no token: characters that need them become <unk>.
            if rng.below(5) != 0 {
                tokens.push(format!("<0x{b:02X}>"));
                mergeable.push(false);
            }
        }
        for a in ALPHABET {
            tokens.push(a.into());
            mergeable.push(true);
        }
        for _ in 0..120 {
            let len = 2 + rng.below(4);
            tokens.push((0..len).map(|_| ALPHABET[rng.below(letters)]).collect());
            // A few never merge (control tokens spelled like text).
            mergeable.push(rng.below(10) != 0);
        }
        let scores = (0..tokens.len()).map(|_| -(rng.below(8) as f32)).collect();
        (tokens, scores, mergeable)
    }

    #[test]
    fn same_pieces_as_bpe_with_derived_merges() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Besides the letters: a character with no token ('x'), one with only some byte tokens.
        let others = ["x", "\u{1F600}"];
        for _ in 0..100 {
            // Few letters make tokens that overlap and split several ways.
            let letters = 2 + rng.below(ALPHABET.len() - 1);
            let (tokens, scores, mergeable) = vocab(&mut rng, letters);
            let unk = [None, Some(0)][rng.below(2)];
            let spm = Bpe::sentencepiece(&tokens, &scores, |i| mergeable[i as usize], unk);
            let bpe = spm.to_bpe().unwrap();
            for _ in 0..200 {
                let len = rng.below(24);
                let text: String = (0..len)
                    .map(|_| match rng.below(10) {
                        0 => others[rng.below(2)],
                        _ => ALPHABET[rng.below(letters)],
                    })
                    .collect();
                assert_eq!(
                    spm.tokenize(&text).unwrap(),
                    bpe.tokenize(&text).unwrap(),
                    "{text:?}"
                );
            }
        }
    }

    /// A merge list over random tokens (pairs listed twice, pairs naming texts the vocabulary
    /// lacks, tokens that share a text), with and without `ignore_merges`: the crate's BPE with
    /// the same list gives the same pieces.
    #[test]
    fn merge_lists_give_the_crates_pieces() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..100 {
            let letters = 2 + rng.below(ALPHABET.len() - 1);
            let (tokens, _, _) = vocab(&mut rng, letters);
            let word = |rng: &mut Rng| -> String {
                let len = 1 + rng.below(3);
                (0..len).map(|_| ALPHABET[rng.below(letters)]).collect()
            };
            let merges: Vec<String> = (0..150)
                .map(|_| format!("{} {}", word(&mut rng), word(&mut rng)))
                .collect();
            let ignore = rng.below(2) == 1;
            let ours = Bpe::with_merges(&tokens, &merges, ignore).unwrap();
            let theirs = ours.to_bpe().unwrap();
            for _ in 0..200 {
                let len = rng.below(16);
                // Letters, and one with no token ('x'), which BPE without a fallback drops.
                let text: String = (0..len)
                    .map(|_| match rng.below(letters + 1) {
                        i if i == letters => "x",
                        i => ALPHABET[i],
                    })
                    .collect();
                assert_eq!(
                    ours.tokenize(&text).unwrap(),
                    theirs.tokenize(&text).unwrap(),
                    "{text:?}"
                );
            }
        }
        assert_eq!(
            Bpe::with_merges(&["a".into()], &["ab".into()], false).err(),
            Some("ab".to_string())
        );
    }

    /// `tokenizer.json` BPE models (both forms of merges, byte fallback, fused or single unknown
    /// tokens, `ignore_merges`, ids with gaps where texts repeat): where the crate reads one, ours
    /// reads it too and gives the same pieces; where the crate refuses one, so does ours.
    #[test]
    fn tokenizer_json_models_give_the_crates_pieces() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut read = 0;
        for _ in 0..200 {
            let letters = 2 + rng.below(ALPHABET.len() - 1);
            let (tokens, _, _) = vocab(&mut rng, letters);
            let vocab: serde_json::Map<String, serde_json::Value> = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), i.into()))
                .collect();
            let word = |rng: &mut Rng| -> String {
                let len = 1 + rng.below(3);
                (0..len).map(|_| ALPHABET[rng.below(letters)]).collect()
            };
            let pairs: Vec<(String, String)> =
                (0..60).map(|_| (word(&mut rng), word(&mut rng))).collect();
            // Merges naming missing tokens make both refuse the file: keep most files readable.
            let strict = rng.below(4) == 0;
            let pairs: Vec<(String, String)> = pairs
                .into_iter()
                .filter(|(a, b)| {
                    strict
                        || [a, b, &format!("{a}{b}")]
                            .iter()
                            .all(|t| vocab.contains_key(*t))
                })
                .collect();
            let merges: serde_json::Value = match rng.below(2) {
                0 => pairs.iter().map(|(a, b)| format!("{a} {b}")).collect(),
                _ => pairs
                    .iter()
                    .map(|(a, b)| serde_json::json!([a, b]))
                    .collect(),
            };
            let unk = [None, Some("<unk>")][rng.below(2)];
            let json = serde_json::json!({
                "type": "BPE",
                "dropout": null,
                "unk_token": unk,
                "fuse_unk": rng.below(2) == 1,
                "byte_fallback": rng.below(2) == 1,
                "ignore_merges": rng.below(2) == 1,
                "vocab": vocab,
                "merges": merges,
            })
            .to_string();
            let theirs = serde_json::from_str::<BPE>(&json);
            let ours = serde_json::from_str::<Bpe>(&json);
            let (Ok(theirs), Ok(ours)) = (&theirs, &ours) else {
                assert!(theirs.is_err() && ours.is_err(), "{json}");
                continue;
            };
            read += 1;
            for _ in 0..100 {
                let len = rng.below(16);
                let text: String = (0..len)
                    .map(|_| match rng.below(letters + 2) {
                        i if i == letters => "x",
                        i if i == letters + 1 => "\u{1F600}",
                        i => ALPHABET[i],
                    })
                    .collect();
                assert_eq!(
                    ours.tokenize(&text).ok(),
                    theirs.tokenize(&text).ok(),
                    "{text:?}"
                );
            }
        }
        assert!(read > 100, "{read} files read");
        // What ours leaves to the crate: dropout, subword prefixes, mixed forms of merges.
        for refused in [
            r#"{"type":"BPE","dropout":0.1,"vocab":{"a":0},"merges":[]}"#,
            r#"{"type":"BPE","continuing_subword_prefix":"@@","vocab":{"a":0},"merges":[]}"#,
            r#"{"type":"BPE","vocab":{"a":0,"aa":1},"merges":["a a",["a","a"]]}"#,
            r#"{"type":"WordPiece","vocab":{"a":0},"merges":[]}"#,
        ] {
            assert!(serde_json::from_str::<Bpe>(refused).is_err(), "{refused}");
        }
        // The older form's `#version` line is not a merge.
        let ours = serde_json::from_str::<Bpe>(
            r##"{"type":"BPE","vocab":{"a":0,"aa":1},"merges":["#version: 0.2","a a"]}"##,
        )
        .unwrap();
        assert_eq!(ours.tokenize("aa").unwrap()[0].id, 1);
    }

    #[test]
    fn merges_follow_scores() {
        let tokens: Vec<String> = ["<unk>", "a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, -1.0, -2.0, -3.0, -5.0, -4.0, -6.0];
        let spm = Bpe::sentencepiece(&tokens, &scores, |i| i != 0, Some(0));
        let merges = derive_merges(&spm.0.texts, &scores, |i| i != 0);
        let m: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(m, [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]);
        // "bc" (-4) before "ab" (-5); "abc" from "a" + "bc".
        let ids: Vec<u32> = spm.tokenize("abc").unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, [6]);
        let ids: Vec<u32> = spm.tokenize("abab").unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, [4, 4]);
    }

    #[test]
    fn serializes_as_bpe() {
        let (tokens, scores, mergeable) = vocab(&mut Rng(7), 3);
        let spm = Bpe::sentencepiece(&tokens, &scores, |i| mergeable[i as usize], Some(0));
        let json = serde_json::to_value(&spm).unwrap();
        assert_eq!(json["type"], "BPE");
        assert_eq!(json["byte_fallback"], true);
        let merges = derive_merges(&spm.0.texts, &scores, |i| mergeable[i as usize]);
        assert_eq!(json["merges"].as_array().unwrap().len(), merges.len());
    }
}
