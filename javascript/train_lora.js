// Train LoRA tab: only what gradio cannot do itself (keyboard shortcut, Send to txt2img).
(function () {
    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    // Ctrl+Enter (Cmd+Enter) inside the tab starts training, like Generate elsewhere in the WebUI.
    document.addEventListener("keydown", function (event) {
        if (!(event.key === "Enter" && (event.ctrlKey || event.metaKey))) return;
        var root = app().querySelector("#train_lora_root");
        if (!root || !root.offsetParent || !root.contains(event.target)) return;
        var start = root.querySelector("#train_lora_start");
        if (start && !start.disabled) {
            start.click();
            event.preventDefault();
        }
    });

    // Fill txt2img's prompt with the activation text and <lora:name:0.8>, then switch tabs.
    window.trainLoraSendToTxt2img = function (loraPath, prompts) {
        if (!loraPath) return;
        var name = loraPath.split(/[\\/]/).pop().replace(/\.safetensors$/, "");
        var first = (prompts || "").split("\n")[0].trim();
        var text = (first ? first + ", " : "") + "<lora:" + name + ":0.8>";
        var box = app().querySelector("#txt2img_prompt textarea");
        if (!box) return;
        box.value = text;
        if (typeof updateInput === "function") updateInput(box);
        if (typeof switch_to_txt2img === "function") switch_to_txt2img();
    };

    // A new LoRA file appeared in the tab: refresh the Lora cards of txt2img and img2img so the
    // card shows without a restart (the WebUI's hidden refresh buttons; absent when standalone).
    var lastOutput = null;
    function refreshLoraCards() {
        var box = app().querySelector("#train_lora_output textarea");
        if (!box) return;
        var value = box.value || "";
        if (lastOutput === null) {
            lastOutput = value;
            return;
        }
        if (value === lastOutput) return;
        lastOutput = value;
        if (!value) return;
        ["txt2img", "img2img"].forEach(function (tab) {
            var button = app().querySelector("#" + tab + "_lora_extra_refresh_internal");
            if (button) button.click();
        });
    }
    setInterval(refreshLoraCards, 2000);
})();
