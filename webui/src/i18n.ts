// Interface text in Chinese and English; the choice is kept in localStorage.

const en = {
  "app.title": "Zhiku",
  "nav.chat": "Chat",
  "nav.kb": "Knowledge bases",
  "nav.apiKey": "API key",
  "nav.lang": "中文",
  "key.title": "API key required",
  "key.help": "This gateway requires an API key. It is kept in this browser only.",
  "key.placeholder": "Bearer key, e.g. sk-…",
  "key.save": "Save",
  "key.clear": "Forget key",
  "common.cancel": "Cancel",
  "common.confirm": "Confirm",
  "common.close": "Close",
  "common.delete": "Delete",
  "common.error": "Error",
  "chat.conversations": "Conversations",
  "chat.new": "New chat",
  "chat.rename": "Rename",
  "chat.renamePrompt": "New title",
  "chat.deleteConfirm": "Delete conversation “{name}”?",
  "chat.untitled": "New chat",
  "chat.mode": "Chat with",
  "chat.mode.plain": "Plain chat",
  "chat.mode.kb": "Knowledge base",
  "chat.mode.files": "Uploaded files",
  "chat.kb": "Knowledge base",
  "chat.noKb": "(no knowledge base yet)",
  "chat.files": "Files to chat with",
  "chat.filesUpload": "Upload",
  "chat.filesReady": "{n} file(s) ready",
  "chat.filesWorking": "Reading files…",
  "chat.filesUnavailable": "File chat is not available on this gateway.",
  "chat.filesNeeded": "Upload files first.",
  "chat.topK": "Top k",
  "chat.threshold": "Score threshold",
  "chat.temperature": "Temperature",
  "chat.history": "History messages",
  "chat.placeholder": "Ask a question… (Enter to send, Shift+Enter for a new line)",
  "chat.send": "Send",
  "chat.stop": "Stop",
  "chat.sources": "Sources",
  "chat.copy": "Copy",
  "chat.copied": "Copied",
  "chat.thumbUp": "Helpful",
  "chat.thumbDown": "Not helpful",
  "chat.thanks": "Thanks for the feedback",
  "chat.empty": "Ask anything, or pick a knowledge base to get answers with sources.",
  "chat.you": "You",
  "chat.assistant": "Zhiku",
  "passage.title": "Source [{n}]: {file}",
  "passage.score": "score {score}",
  "passage.open": "Open original file",
  "kb.list": "Knowledge bases",
  "kb.create": "Create",
  "kb.name": "Name",
  "kb.description": "Description",
  "kb.none": "No knowledge base yet: create one.",
  "kb.pick": "Pick or create a knowledge base.",
  "kb.files": "files",
  "kb.chunks": "chunks",
  "kb.model": "embedding model",
  "kb.deleteKb": "Delete knowledge base",
  "kb.deleteConfirm": "Delete knowledge base “{name}” with all its files? This cannot be undone.",
  "kb.drop": "Drop files here, or click to choose (many at once)",
  "kb.chunkSize": "Chunk size",
  "kb.chunkOverlap": "Overlap",
  "kb.splitter": "Splitter",
  "kb.titleEnhance": "Title enhance",
  "kb.override": "Replace existing",
  "kb.uploads": "Uploads",
  "kb.unchanged": "unchanged",
  "kb.fileTable": "Files",
  "kb.col.name": "Name",
  "kb.col.size": "Size",
  "kb.col.chunks": "Chunks",
  "kb.col.state": "State",
  "kb.col.error": "Error",
  "kb.col.uploaded": "Uploaded at",
  "kb.col.actions": "Actions",
  "kb.noFiles": "No files yet.",
  "kb.download": "Download",
  "kb.reindex": "Reindex",
  "kb.deleteFile": "Delete",
  "kb.deleteFileConfirm": "Delete file “{name}” and its chunks?",
  "kb.search": "Search this knowledge base",
  "kb.searchPlaceholder": "Query",
  "kb.searchButton": "Search",
  "kb.noHits": "No chunk found.",
  "kb.refresh": "Refresh",
  "state.queued": "queued",
  "state.running": "running",
  "state.parsing": "parsing",
  "state.embedding": "embedding",
  "state.indexing": "indexing",
  "state.succeeded": "succeeded",
  "state.failed": "failed",
  "state.cancelled": "cancelled",
  "state.uploading": "uploading",
};

type Key = keyof typeof en;

const zh: Record<Key, string> = {
  "app.title": "知库",
  "nav.chat": "对话",
  "nav.kb": "知识库",
  "nav.apiKey": "API 密钥",
  "nav.lang": "English",
  "key.title": "需要 API 密钥",
  "key.help": "此网关需要 API 密钥，密钥只保存在本浏览器中。",
  "key.placeholder": "Bearer 密钥，例如 sk-…",
  "key.save": "保存",
  "key.clear": "清除密钥",
  "common.cancel": "取消",
  "common.confirm": "确认",
  "common.close": "关闭",
  "common.delete": "删除",
  "common.error": "错误",
  "chat.conversations": "会话",
  "chat.new": "新建对话",
  "chat.rename": "重命名",
  "chat.renamePrompt": "新标题",
  "chat.deleteConfirm": "删除会话“{name}”？",
  "chat.untitled": "新对话",
  "chat.mode": "对话模式",
  "chat.mode.plain": "普通对话",
  "chat.mode.kb": "知识库问答",
  "chat.mode.files": "文件对话",
  "chat.kb": "知识库",
  "chat.noKb": "（还没有知识库）",
  "chat.files": "要对话的文件",
  "chat.filesUpload": "上传",
  "chat.filesReady": "{n} 个文件已就绪",
  "chat.filesWorking": "正在读取文件…",
  "chat.filesUnavailable": "此网关不支持文件对话。",
  "chat.filesNeeded": "请先上传文件。",
  "chat.topK": "匹配条数 top_k",
  "chat.threshold": "相似度阈值",
  "chat.temperature": "温度",
  "chat.history": "历史消息数",
  "chat.placeholder": "输入问题…（Enter 发送，Shift+Enter 换行）",
  "chat.send": "发送",
  "chat.stop": "停止",
  "chat.sources": "出处",
  "chat.copy": "复制",
  "chat.copied": "已复制",
  "chat.thumbUp": "有帮助",
  "chat.thumbDown": "没帮助",
  "chat.thanks": "感谢反馈",
  "chat.empty": "随便问点什么，或选择一个知识库获得带出处的回答。",
  "chat.you": "我",
  "chat.assistant": "知库",
  "passage.title": "出处 [{n}]：{file}",
  "passage.score": "相似度 {score}",
  "passage.open": "打开原文件",
  "kb.list": "知识库",
  "kb.create": "新建",
  "kb.name": "名称",
  "kb.description": "简介",
  "kb.none": "还没有知识库，请新建一个。",
  "kb.pick": "选择或新建一个知识库。",
  "kb.files": "个文件",
  "kb.chunks": "个分块",
  "kb.model": "向量模型",
  "kb.deleteKb": "删除知识库",
  "kb.deleteConfirm": "删除知识库“{name}”及其全部文件？此操作无法撤销。",
  "kb.drop": "把文件拖到这里，或点击选择（可多选）",
  "kb.chunkSize": "分块长度",
  "kb.chunkOverlap": "重叠长度",
  "kb.splitter": "分块方式",
  "kb.titleEnhance": "标题增强",
  "kb.override": "覆盖同名文件",
  "kb.uploads": "上传进度",
  "kb.unchanged": "内容未变",
  "kb.fileTable": "文件",
  "kb.col.name": "文件名",
  "kb.col.size": "大小",
  "kb.col.chunks": "分块",
  "kb.col.state": "状态",
  "kb.col.error": "错误",
  "kb.col.uploaded": "上传时间",
  "kb.col.actions": "操作",
  "kb.noFiles": "还没有文件。",
  "kb.download": "下载",
  "kb.reindex": "重建索引",
  "kb.deleteFile": "删除",
  "kb.deleteFileConfirm": "删除文件“{name}”及其分块？",
  "kb.search": "检索知识库",
  "kb.searchPlaceholder": "检索内容",
  "kb.searchButton": "检索",
  "kb.noHits": "没有匹配的分块。",
  "kb.refresh": "刷新",
  "state.queued": "排队中",
  "state.running": "处理中",
  "state.parsing": "解析中",
  "state.embedding": "向量化中",
  "state.indexing": "建索引中",
  "state.succeeded": "成功",
  "state.failed": "失败",
  "state.cancelled": "已取消",
  "state.uploading": "上传中",
};

export type Lang = "zh" | "en";
const LANG_KEY = "zhiku.lang";
const dictionaries: Record<Lang, Record<Key, string>> = { en, zh };
const listeners: Array<() => void> = [];

function initialLang(): Lang {
  const stored = localStorage.getItem(LANG_KEY);
  if (stored === "zh" || stored === "en") return stored;
  return navigator.language.toLowerCase().startsWith("zh") ? "zh" : "en";
}

let current: Lang = initialLang();

export function lang(): Lang {
  return current;
}

/** The text for a key in the current language, with {placeholders} filled in. */
export function t(key: Key, vars: Record<string, string | number> = {}): string {
  const text = dictionaries[current][key] ?? en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name: string) => String(vars[name] ?? `{${name}}`));
}

export function stateLabel(state: string): string {
  const key = `state.${state}` as Key;
  return key in en ? t(key) : state;
}

export function setLang(next: Lang): void {
  current = next;
  localStorage.setItem(LANG_KEY, next);
  document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
  for (const listener of listeners) listener();
}

/** Run on every language switch (pages re-render their text). */
export function onLangChange(listener: () => void): void {
  listeners.push(listener);
}
