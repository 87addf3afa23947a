// Train LoRA tab, tag editor: only what gradio cannot do itself.
// 1. Warn before leaving or reloading the page while captions are unsaved (the banner's data-unsaved).
// 2. Keyboard: Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y) undo/redo, Ctrl+S save, PageUp/PageDown pages,
//    Alt+Left/Right previous/next image. Text fields keep their own undo and arrows.
(function () {
    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function unsavedCount() {
        var banner = app().querySelector("#train_lora_tags_banner [data-unsaved]");
        return banner ? parseInt(banner.getAttribute("data-unsaved") || "0", 10) : 0;
    }

    window.trainLoraTagsUnsaved = unsavedCount;

    window.addEventListener("beforeunload", function (event) {
        if (unsavedCount() > 0) {
            event.preventDefault();
            event.returnValue = "Captions edited in the Train LoRA tag editor are not saved yet.";
            return event.returnValue;
        }
    });

    function visibleEditor() {
        var editor = app().querySelector("#train_lora_tags");
        return editor && editor.offsetParent !== null ? editor : null;
    }

    function press(id) {
        var button = app().querySelector("#" + id);
        if (button && !button.disabled) {
            button.click();
            return true;
        }
        return false;
    }

    function typing(target) {
        var tag = target && target.tagName ? target.tagName.toLowerCase() : "";
        return tag === "input" || tag === "textarea" || tag === "select" || (target && target.isContentEditable);
    }

    document.addEventListener("keydown", function (event) {
        var editor = visibleEditor();
        if (!editor) return;
        var key = event.key.toLowerCase();
        var ctrl = event.ctrlKey || event.metaKey;
        var done = false;
        if (ctrl && key === "s") {
            done = press("train_lora_tags_save");
            if (!done) event.preventDefault();  // never the browser's "save page" while the editor is shown
        } else if (typing(event.target)) {
            return;
        } else if (ctrl && key === "z" && !event.shiftKey) {
            done = press("train_lora_tags_undo");
        } else if (ctrl && (key === "y" || (key === "z" && event.shiftKey))) {
            done = press("train_lora_tags_redo");
        } else if (key === "pagedown") {
            done = press("train_lora_tags_next");
        } else if (key === "pageup") {
            done = press("train_lora_tags_prev");
        } else if (event.altKey && key === "arrowright") {
            done = press("train_lora_tags_image_next");
        } else if (event.altKey && key === "arrowleft") {
            done = press("train_lora_tags_image_prev");
        }
        if (done) event.preventDefault();
    });
})();
