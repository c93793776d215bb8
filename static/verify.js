// The page the verification email links to: the person who opened the link (who
// controls the mailbox) chooses the account's password; POST /api/v1/auth/verify
// then verifies the account and revokes everything it had before.
"use strict";
(() => {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname); // the token leaves the address bar
  const form = document.getElementById("verify");
  const status = document.getElementById("status");
  if (!token) {
    form.hidden = true;
    status.textContent = "This link is incomplete: open the link in the email again.";
    return;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = document.getElementById("password").value;
    status.textContent = "Confirming…";
    try {
      const resp = await fetch("/api/v1/auth/verify", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token, password }),
      });
      const body = await resp.json();
      if (resp.ok) {
        form.hidden = true;
        status.textContent = "Your email address is confirmed; log in with the password you chose.";
      } else {
        status.textContent = typeof body.detail === "string" ? body.detail : "Check the password.";
      }
    } catch {
      status.textContent = "The server could not be reached; try again.";
    }
  });
})();
