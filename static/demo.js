// The demo page's buttons call the widget's JavaScript API.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-chat]");
  if (button && window.ChatWidget) window.ChatWidget[button.dataset.chat]();
});
